//! `POST /v1/movements`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::{json_body, AppState};
use crate::movements::{apply, MovementRequest};

pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: MovementRequest = json_body(&req, payload, &state).await?;
    let movement = body.parse(&state.catalogue, &state.settings.movements)?;
    caller.require(Action::Move(movement.kind), Some(&movement.outlet))?;
    let answer = apply(&state, &movement).await?;
    Ok(HttpResponse::Created().json(answer))
}
