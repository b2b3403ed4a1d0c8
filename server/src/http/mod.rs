//! The REST API (axum). [`router`] builds the whole HTTP surface, including the
//! WebSocket upgrade, so handlers can be tested with `tower::ServiceExt::oneshot`.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post, put};
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};

pub mod accounts;
pub mod archive;
pub mod auth;
pub mod error;
pub mod extract;
pub mod groups;
pub mod keys;
pub mod limits;
pub mod link;
pub mod misc;
pub mod push;
pub mod validate;

use crate::state::AppState;

/// The OpenAPI document of the REST API.
#[derive(OpenApi)]
#[openapi(
    info(title = "hushd", description = "hush relay server REST API. The WebSocket protocol is in wire/proto/hush/v1/frames.proto; authentication in docs/PROTOCOL.md."),
    paths(
        accounts::challenge, accounts::register, accounts::by_username, accounts::by_id, accounts::devices,
        accounts::add_device, accounts::remove_device,
        keys::upload, keys::count, keys::bundles,
        misc::healthz, misc::metrics, misc::server_info, misc::certificate,
        groups::create, groups::list, groups::get_group, groups::update, groups::delete_group,
        groups::add_members, groups::remove_member, groups::set_role,
        push::set, push::get, push::remove,
        link::link_token, link::provision, link::link_device, link::rename,
        archive::create, archive::put_chunk, archive::complete, archive::get_chunk, archive::delete,
    ),
    modifiers(&SecurityAddon)
)]
pub struct ApiDoc;

struct SecurityAddon;

/// An `ApiError` answer with `description`.
fn error_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ApiError"))).build();
    ResponseBuilder::new().description(description).content("application/json", content).build().into()
}

/// The `Retry-After` header of a 429: whole seconds to wait.
fn retry_after_header() -> utoipa::openapi::header::Header {
    use utoipa::openapi::{ObjectBuilder, Type};
    let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).build();
    utoipa::openapi::header::HeaderBuilder::new()
        .schema(seconds)
        .description(Some("seconds to wait before retrying"))
        .build()
}

/// Declares the answers every operation of a kind can give, so the document matches the
/// server: 401 on authenticated ones, 400 where a path parameter can be malformed, 413 where
/// a body is read, and the `Retry-After` header of every 429.
fn declare_common_errors(openapi: &mut utoipa::openapi::OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.options,
            &mut item.head,
            &mut item.trace,
        ];
        for op in operations.into_iter().flatten() {
            let responses = &mut op.responses.responses;
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                responses.entry("401".into()).or_insert_with(|| {
                    error_response(
                        "auth_missing, auth_malformed, auth_expired, auth_failed, auth_replayed: see docs/PROTOCOL.md",
                    )
                });
                responses
                    .entry("413".into())
                    .or_insert_with(|| error_response("body_too_large: the body is over 1 MiB"));
            }
            if op.request_body.is_some() {
                responses
                    .entry("413".into())
                    .or_insert_with(|| error_response("body_too_large: the body is over 1 MiB"));
            }
            if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                responses
                    .entry("400".into())
                    .or_insert_with(|| error_response("invalid_request: a path parameter is malformed"));
            }
            // Every 429 is `HttpError::rate_limited`, which always sets `Retry-After`.
            if let Some(utoipa::openapi::RefOr::T(limited)) = responses.get_mut("429") {
                limited.headers.entry("Retry-After".into()).or_insert_with(retry_after_header);
            }
        }
    }
}

/// Bodies that must have at least this many properties. utoipa 5.5 writes
/// `#[schema(min_properties = n)]` as `maxProperties` (utoipa-gen `features.rs`), so the
/// bound is set here.
const MIN_PROPERTIES: [(&str, usize); 1] = [("UpdateGroupRequest", 1)];

fn set_min_properties(components: &mut utoipa::openapi::Components) {
    use utoipa::openapi::{RefOr, Schema};
    for (name, min) in MIN_PROPERTIES {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) {
            object.min_properties = Some(min);
        }
    }
}

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        declare_common_errors(openapi);
        let components = openapi.components.get_or_insert_with(Default::default);
        set_min_properties(components);
        components.add_security_scheme(
            "hush_sig",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "Hush-Sig account=<uuid>,device=<id>,ts=<ms>,nonce=<hex>,sig=<hex>: see docs/PROTOCOL.md",
            ))),
        );
    }
}

async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// All routes of `hushd`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(misc::healthz))
        .route("/metrics", get(misc::metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/server", get(misc::server_info))
        .route("/v1/accounts", post(accounts::register))
        .route("/v1/accounts/challenge", post(accounts::challenge))
        .route("/v1/accounts/username/{username}", get(accounts::by_username))
        .route("/v1/accounts/{account_id}", get(accounts::by_id))
        .route("/v1/accounts/{account_id}/devices", get(accounts::devices))
        .route("/v1/devices", post(accounts::add_device))
        .route("/v1/devices/link-tokens", post(link::link_token))
        .route("/v1/devices/link", post(link::link_device))
        .route("/v1/devices/self", patch(link::rename))
        .route("/v1/devices/self/push", put(push::set).get(push::get).delete(push::remove))
        .route("/v1/devices/{device_id}", delete(accounts::remove_device))
        .route("/v1/keys", put(keys::upload))
        .route("/v1/keys/count", get(keys::count))
        .route("/v1/keys/{account_id}/{device}", get(keys::bundles))
        .route("/v1/certificate", get(misc::certificate))
        .route("/v1/groups", post(groups::create).get(groups::list))
        .route("/v1/groups/{group_id}", get(groups::get_group).patch(groups::update).delete(groups::delete_group))
        .route("/v1/groups/{group_id}/members", post(groups::add_members))
        .route("/v1/groups/{group_id}/members/{account_id}", delete(groups::remove_member))
        .route("/v1/groups/{group_id}/members/{account_id}/role", put(groups::set_role))
        .route("/v1/link-archives", post(archive::create))
        .route(
            "/v1/link-archives/{archive_id}/chunks/{index}",
            // A chunk is raw bytes with a limit of its own (as it happens, the JSON limit's size).
            put(archive::put_chunk)
                .layer(DefaultBodyLimit::max(hush_wire::limits::LINK_ARCHIVE_CHUNK_BYTES as usize))
                .get(archive::get_chunk),
        )
        .route("/v1/link-archives/{archive_id}/complete", post(archive::complete))
        .route("/v1/link-archives/{archive_id}", delete(archive::delete))
        .route("/v1/websocket", get(crate::ws::upgrade))
        .route("/v1/provisioning", get(crate::ws::provisioning::upgrade))
        .route("/v1/provisioning/{address}", put(link::provision))
        .fallback(extract::not_found)
        .method_not_allowed_fallback(extract::method_not_allowed)
        .layer(DefaultBodyLimit::max(auth::MAX_BODY_BYTES))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
    use utoipa::openapi::request_body::RequestBody;
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::{OpenApiBuilder, PathsBuilder};

    use super::declare_common_errors;

    /// Regression: the modifier looked at some methods only (GET, PUT, POST and DELETE, then
    /// PATCH for the group endpoints), so an operation of any other did not declare its 400,
    /// 401 and 413.
    #[test]
    fn common_errors_are_declared_on_every_method() {
        let methods = [
            ("PATCH", HttpMethod::Patch),
            ("GET", HttpMethod::Get),
            ("DELETE", HttpMethod::Delete),
            ("HEAD", HttpMethod::Head),
            ("OPTIONS", HttpMethod::Options),
        ];
        for (name, method) in methods {
            let operation = OperationBuilder::new()
                .security(SecurityRequirement::new("hush_sig", Vec::<String>::new()))
                .parameter(ParameterBuilder::new().name("group_id").parameter_in(ParameterIn::Path))
                .request_body(Some(RequestBody::default()));
            let paths = PathsBuilder::new().path("/v1/things/{group_id}", PathItem::new(method, operation));
            let mut doc = OpenApiBuilder::new().paths(paths).build();
            declare_common_errors(&mut doc);
            let item = &doc.paths.paths["/v1/things/{group_id}"];
            let op = [&item.patch, &item.get, &item.delete, &item.head, &item.options].into_iter().flatten().next();
            let responses = op.map(|op| &op.responses.responses);
            for code in ["400", "401", "413"] {
                assert!(responses.is_some_and(|r| r.contains_key(code)), "{name} lacks {code}");
            }
        }
    }
}
