//! `GET /api/v1/streams/{name}/clip.mp4?start=&end=[&format=fmp4]`.

use super::AppState;
use crate::error::{Error, Result};
use axum::extract::{Path, State};
use axum::response::Response;

pub async fn clip(State(_state): State<AppState>, Path(_name): Path<String>) -> Result<Response> {
    Err(Error::unavailable("clips are being built"))
}
