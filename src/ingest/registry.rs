//! Which producer owns which stream. A second producer on a stream takes over: the first is told
//! to stop reading, persists what it has received, ends its session, and only then does the new
//! one start, so the stream's timeline is decided by one session at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a new producer waits for the one it replaces to finish persisting.
const TAKEOVER_WAIT: Duration = Duration::from_secs(30);

struct Active {
    token: u64,
    stop: CancellationToken,
    done: watch::Receiver<bool>,
}

#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<RegistryInner>>,
}

#[derive(Default)]
struct RegistryInner {
    next_token: u64,
    active: HashMap<String, Active>,
}

/// Ownership of a stream by one producer; released on drop.
pub struct Claim {
    registry: Registry,
    name: String,
    token: u64,
    pub stop: CancellationToken,
    done: watch::Sender<bool>,
}

impl Registry {
    /// Takes the stream for a new producer, stopping and awaiting the current one. `shutdown`
    /// is the server-wide stop signal; the claim's own token is its child.
    pub async fn claim(&self, name: &str, shutdown: &CancellationToken) -> Claim {
        loop {
            let (old_token, mut done) = {
                let mut inner = self.inner.lock().expect("registry lock");
                match inner.active.get(name) {
                    Some(a) => {
                        a.stop.cancel();
                        (a.token, a.done.clone())
                    }
                    None => {
                        inner.next_token += 1;
                        let token = inner.next_token;
                        let stop = shutdown.child_token();
                        let (done_tx, done_rx) = watch::channel(false);
                        inner.active.insert(
                            name.to_string(),
                            Active {
                                token,
                                stop: stop.clone(),
                                done: done_rx,
                            },
                        );
                        return Claim {
                            registry: self.clone(),
                            name: name.to_string(),
                            token,
                            stop,
                            done: done_tx,
                        };
                    }
                }
            };
            // A dropped sender also ends the wait (wait_for returns an error then).
            let _ = tokio::time::timeout(TAKEOVER_WAIT, done.wait_for(|d| *d)).await;
            let mut inner = self.inner.lock().expect("registry lock");
            if inner.active.get(name).is_some_and(|a| a.token == old_token) {
                // Finished, or did not finish in time: the slot is taken over either way.
                inner.active.remove(name);
            }
        }
    }

    pub fn is_active(&self, name: &str) -> bool {
        self.inner
            .lock()
            .map(|i| i.active.contains_key(name))
            .unwrap_or(false)
    }

    /// Stops the producer of a stream (stream deleted).
    pub fn stop(&self, name: &str) {
        if let Ok(inner) = self.inner.lock() {
            if let Some(a) = inner.active.get(name) {
                a.stop.cancel();
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.registry.inner.lock() {
            if inner
                .active
                .get(&self.name)
                .is_some_and(|a| a.token == self.token)
            {
                inner.active.remove(&self.name);
            }
        }
        let _ = self.done.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_claim_stops_and_waits_for_first() {
        let reg = Registry::default();
        let shutdown = CancellationToken::new();
        let first = reg.claim("cam", &shutdown).await;
        assert!(reg.is_active("cam"));
        let stop = first.stop.clone();
        let reg2 = reg.clone();
        let s2 = shutdown.clone();
        let second = tokio::spawn(async move { reg2.claim("cam", &s2).await });
        stop.cancelled().await; // the first producer is told to stop...
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !second.is_finished(),
            "...and the second waits until it is done"
        );
        drop(first);
        let second = second.await.unwrap();
        assert!(!second.stop.is_cancelled());
        assert!(reg.is_active("cam"));
        drop(second);
        assert!(!reg.is_active("cam"));
    }

    #[tokio::test]
    async fn shutdown_stops_every_claim() {
        let reg = Registry::default();
        let shutdown = CancellationToken::new();
        let c = reg.claim("a", &shutdown).await;
        shutdown.cancel();
        assert!(c.stop.is_cancelled());
    }
}
