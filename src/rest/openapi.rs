//! The OpenAPI 3.1 document of the REST routes, built from the route table
//! ([`super::routes::ROUTES`]) and the JSON types' own schemas
//! ([`super::json`]): nothing in it is written by hand twice.

use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ComponentsBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Content, HeaderBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr, Required, ResponseBuilder, Schema,
};
use utoipa::{PartialSchema, ToSchema};

use super::json::*;
use super::routes::{Endpoint, ROUTES, Route};

const JSON: &str = "application/json";
const BEARER: &str = "bearer";

/// The document. `authentication` says whether calls need a credential
/// (the running configuration's), so the document says what is true.
pub fn document(authentication: bool) -> OpenApi {
    let mut paths = Paths::new();
    for route in &ROUTES {
        paths.add_path_operation(route.template, vec![method(route)], operation(route, authentication));
    }
    let mut schemas = Vec::new();
    for collect in
        [<RoomJson as ToSchema>::schemas, <ParticipantJson as ToSchema>::schemas, <ErrorJson as ToSchema>::schemas]
    {
        collect(&mut schemas);
    }
    let components = ComponentsBuilder::new()
        .schema_from::<CreateRoomBody>()
        .schema_from::<UpdateRoomBody>()
        .schema_from::<RoomMetadataBody>()
        .schema_from::<RoomSettingsBody>()
        .schema_from::<CreateTokenBody>()
        .schema_from::<RoomJson>()
        .schema_from::<ParticipantJson>()
        .schema_from::<TokenJson>()
        .schema_from::<MuteJson>()
        .schema_from::<ErrorJson>()
        .schemas_from_iter(schemas)
        .security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (rck_...) or an identity provider's JWT, as for the RPCs."))
                    .build(),
            ),
        )
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("RoomControl: the NestJS app's REST routes")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The REST endpoints of the NestJS LiveKit app RoomControl replaces, with its JSON shapes. \
                     Each is served by the RoomControl RPC named in its description, with the same validation, \
                     authorization, limits and metrics. Errors have NestJS's shape.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}

fn method(route: &Route) -> HttpMethod {
    match route.method.as_str() {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        other => unreachable!("no route uses {other}"),
    }
}

fn operation(route: &'static Route, authentication: bool) -> utoipa::openapi::path::Operation {
    let mut operation = OperationBuilder::new()
        .operation_id(Some(route.operation_id))
        .summary(Some(route.summary))
        .description(Some(route.description))
        .tag("livekit");
    for (name, description) in [
        ("name", "The room's name, 1 to 256 bytes (percent-encoded in the path)."),
        ("identity", "The participant's identity, 1 to 256 bytes."),
    ] {
        if route.template.contains(&format!("{{{name}}}")) {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some(description))
                    .schema(Some(
                        ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(256)),
                    )),
            );
        }
    }
    if route.endpoint == Endpoint::MuteTrack {
        operation = operation
            .parameter(
                ParameterBuilder::new()
                    .name("trackSid")
                    .parameter_in(ParameterIn::Query)
                    .required(Required::True)
                    .description(Some("The track's sid: TR_ followed by letters and digits."))
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some("^TR_[A-Za-z0-9]+$"))
                            .max_length(Some(64))
                            .examples(["TR_VCbXpRdsFbGz"]),
                    )),
            )
            .parameter(
                ParameterBuilder::new()
                    .name("muted")
                    .parameter_in(ParameterIn::Query)
                    .required(Required::True)
                    .description(Some("true mutes, false unmutes."))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Boolean))),
            );
    }
    if let Some(body) = body_schema(route.endpoint) {
        operation = operation.request_body(Some(
            RequestBodyBuilder::new()
                // NestJS reads a missing body as {}: PATCH needs none.
                .required(Some(if route.endpoint == Endpoint::UpdateRoom { Required::False } else { Required::True }))
                .content(JSON, Content::new(Some(body)))
                .build(),
        ));
    }
    let mut success = ResponseBuilder::new().description(route.summary);
    if let Some(reply) = reply_schema(route.endpoint) {
        success = success.content(JSON, Content::new(Some(reply)));
    }
    operation = operation.response(route.success.as_str(), success.build());
    for (status, description) in errors(route, authentication) {
        let mut response = ResponseBuilder::new()
            .description(description)
            .content(JSON, Content::new(Some(Ref::from_schema_name(ErrorJson::name()))));
        if status == "429" {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(<u32 as PartialSchema>::schema())
                    .description(Some("Seconds to wait before trying again."))
                    .build(),
            );
        }
        operation = operation.response(status, response.build());
    }
    if authentication {
        operation = operation.security(SecurityRequirement::new(BEARER, Vec::<String>::new()));
    }
    operation.build()
}

fn body_schema(endpoint: Endpoint) -> Option<RefOr<Schema>> {
    let name = match endpoint {
        Endpoint::CreateRoom => CreateRoomBody::name(),
        Endpoint::UpdateRoom => UpdateRoomBody::name(),
        Endpoint::CreateToken => CreateTokenBody::name(),
        _ => return None,
    };
    Some(Ref::from_schema_name(name).into())
}

fn reply_schema(endpoint: Endpoint) -> Option<RefOr<Schema>> {
    let reference = |name: std::borrow::Cow<'static, str>| RefOr::from(Ref::from_schema_name(name));
    Some(match endpoint {
        Endpoint::CreateRoom | Endpoint::GetRoom | Endpoint::UpdateRoom => reference(RoomJson::name()),
        Endpoint::ListRooms => ArrayBuilder::new().items(reference(RoomJson::name())).into(),
        Endpoint::ListParticipants => ArrayBuilder::new().items(reference(ParticipantJson::name())).into(),
        Endpoint::MuteTrack => reference(MuteJson::name()),
        Endpoint::CreateToken => reference(TokenJson::name()),
        Endpoint::DeleteRoom | Endpoint::RemoveParticipant => return None,
    })
}

/// The errors a route can answer, with what each means.
fn errors(route: &Route, authentication: bool) -> Vec<(&'static str, &'static str)> {
    let mut errors = vec![("400", "A rule is broken: every broken rule is listed.")];
    if authentication {
        errors.push(("401", "No credential, or a bad one."));
    }
    errors.push(("403", "The credential lacks the route's scope or the room, or the request comes from a browser origin that is not allowed."));
    if route.may_be_missing() {
        errors.push(("404", "No such room, participant or track (or a path with an empty name)."));
    }
    if route.has_body() {
        errors.push(("408", "The body did not arrive in full within server.request_body_timeout."));
        errors.push(("413", "The body is larger than server.max_message_bytes."));
        errors.push(("415", "The body is not JSON (content-type: application/json)."));
    }
    errors.extend([
        (
            "429",
            "Too many calls at once, or the caller is over its rate limit (limits.*); retry after Retry-After seconds.",
        ),
        ("500", "LiveKit answered something RoomControl cannot use."),
        (
            "503",
            "LiveKit is unreachable or refuses RoomControl's key (or an identity provider's keys cannot be loaded).",
        ),
        ("504", "LiveKit did not answer in time (livekit.timeout)."),
    ]);
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_route() {
        let document = serde_json::to_value(document(true)).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        for route in &ROUTES {
            let operation = &document["paths"][route.template][route.method.as_str().to_lowercase()];
            assert_eq!(operation["operationId"], route.operation_id, "{}", route.template);
            assert!(operation["responses"][route.success.as_str()].is_object(), "{}", route.template);
        }
        let unauthenticated = serde_json::to_value(super::document(false)).unwrap();
        assert!(unauthenticated["paths"]["/livekit/rooms"]["get"]["security"].is_null());
        assert!(unauthenticated["paths"]["/livekit/rooms"]["get"]["responses"]["401"].is_null());
    }

    #[test]
    fn every_reference_resolves() {
        let document = serde_json::to_value(document(true)).unwrap();
        let mut references = Vec::new();
        collect_references(&document, &mut references);
        assert!(!references.is_empty());
        for reference in references {
            let name = reference.strip_prefix("#/components/schemas/").expect("a schema reference");
            assert!(document["components"]["schemas"][name].is_object(), "{reference} is not defined");
        }
    }

    fn collect_references(value: &serde_json::Value, into: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(object) => {
                for (key, value) in object {
                    match value {
                        serde_json::Value::String(target) if key == "$ref" => into.push(target.clone()),
                        _ => collect_references(value, into),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| collect_references(item, into)),
            _ => {}
        }
    }
}
