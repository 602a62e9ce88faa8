//! Bans: BanParticipant removes the identity from the live rooms it
//! matches, CreateToken refuses it, a join with an old token is undone as
//! soon as its webhook arrives, on any replica; UnbanParticipant lifts it.
//! Everything is in the timeline.

use std::time::Duration;

use roomcontrol::proto::v1::*;
use tonic::Code;
use tonic_types::StatusExt;

use crate::both_stores;
use crate::support::store::{Kind, TestDatabase};
use crate::support::timeline::{app_with_webhooks, next_of, watch_room};
use crate::support::{spawn_app_with, spawn_with_config, test_config, unique};

fn ban(room: &str, identity: &str, reason: &str) -> BanParticipantRequest {
    BanParticipantRequest {
        room: room.to_owned(),
        identity: identity.to_owned(),
        duration: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        reason: reason.to_owned(),
    }
}

fn token_for(room: &str, identity: &str) -> CreateTokenRequest {
    CreateTokenRequest { room: room.to_owned(), identity: identity.to_owned(), ..Default::default() }
}

async fn a_ban_removes_refuses_tokens_and_undoes_a_rejoin(kind: Kind) {
    let database = TestDatabase::create(kind).await;
    let Some((app, standin)) = app_with_webhooks(&database, Duration::ZERO).await else { return };
    let mut client = app.client.clone();
    let room = unique("banned");
    standin.add_participant(&room, "mallory");
    standin.add_participant(&room, "alice");
    let mut stream = watch_room(&app, &room).await;

    let reply = client.ban_participant(ban(&room, "mallory", "spam in chat")).await.unwrap().into_inner();
    let stored = reply.ban.expect("the ban");
    assert!(stored.id.starts_with("BAN_"), "{stored:?}");
    assert_eq!((stored.room.as_str(), stored.identity.as_str()), (room.as_str(), "mallory"));
    assert!(stored.expires_at.is_some(), "{stored:?}");
    assert_eq!(reply.removed_from, std::slice::from_ref(&room));
    assert!(reply.failed_rooms.is_empty(), "{:?}", reply.failed_rooms);
    assert!(standin.participant(&room, "mallory").is_none(), "mallory is gone from the room");
    assert!(standin.participant(&room, "alice").is_some(), "alice stays");

    let banned = next_of(&mut stream, &["participant_banned"]).await;
    assert_eq!(banned.actor.as_ref().unwrap().rpc, "BanParticipant");
    let enforced = next_of(&mut stream, &["ban_enforced"]).await;
    assert_eq!(enforced.participant.as_ref().unwrap().identity, "mallory");
    assert_eq!(enforced.actor.as_ref().unwrap().rpc, "BanParticipant");

    // No new token for the room, whoever asks; other rooms are not banned.
    let status = client.create_token(token_for(&room, "mallory")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    for part in ["\"mallory\" is banned", &room, &stored.id, "spam in chat", "until 20"] {
        assert!(status.message().contains(part), "{part:?} not in {:?}", status.message());
    }
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "BANNED");
    assert_eq!(info.metadata.get("ban_id"), Some(&stored.id));
    let until = info.metadata.get("until").expect("until");
    assert!(until.starts_with("20") && until.ends_with('Z'), "{until}");
    client.create_token(token_for(&unique("elsewhere"), "mallory")).await.expect("another room is not banned");

    // Joining anyway, with a token minted before the ban: removed again.
    standin.add_participant(&room, "mallory");
    next_of(&mut stream, &["participant_joined"]).await;
    let enforced = next_of(&mut stream, &["ban_enforced"]).await;
    assert_eq!(enforced.participant.as_ref().unwrap().identity, "mallory");
    assert!(standin.participant(&room, "mallory").is_none(), "removed on rejoin");

    let listed = client.list_bans(ListBansRequest { room: room.clone(), ..Default::default() }).await.unwrap();
    assert_eq!(listed.into_inner().bans, std::slice::from_ref(&stored));

    // Lifted: tokens again, and the ban is gone from the list.
    client.unban_participant(UnbanParticipantRequest { ban_id: stored.id.clone() }).await.unwrap();
    let lifted = next_of(&mut stream, &["participant_unbanned"]).await;
    assert_eq!(lifted.participant.as_ref().unwrap().identity, "mallory");
    client.create_token(token_for(&room, "mallory")).await.expect("a token once the ban is lifted");
    assert!(client.list_bans(ListBansRequest::default()).await.unwrap().into_inner().bans.is_empty());
    let again = client.unban_participant(UnbanParticipantRequest { ban_id: stored.id.clone() }).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "{again:?}");
    assert!(again.message().contains(&stored.id), "{}", again.message());
}
both_stores!(bans_hold_on, a_ban_removes_refuses_tokens_and_undoes_a_rejoin);

/// A ban survives a restart: it is in the store, not only in memory.
#[tokio::test]
async fn a_ban_holds_after_a_restart() {
    let database = TestDatabase::create(Kind::Sqlite).await;
    let url = database.url.clone();
    let app = spawn_app_with(move |config| config.store.url = url).await;
    let room = unique("kept");
    let forever = BanParticipantRequest { duration: None, ..ban(&room, "mallory", "") };
    let stored = app.client.clone().ban_participant(forever).await.unwrap().into_inner().ban.unwrap();
    assert_eq!(stored.expires_at, None);
    drop(app);
    let url = database.url.clone();
    let app = spawn_app_with(move |config| config.store.url = url).await;
    let status = app.client.clone().create_token(token_for(&room, "mallory")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("until lifted"), "{}", status.message());
    assert_eq!(app.client.clone().list_bans(ListBansRequest::default()).await.unwrap().into_inner().bans, [stored]);
}

#[tokio::test]
async fn a_pattern_ban_removes_the_identity_from_every_matching_room() {
    let app = spawn_app_with(|_| {}).await;
    let Some(standin) = app.standin.clone() else { return };
    let prefix = unique("class");
    for room in ["a", "b", "c"] {
        standin.add_participant(&format!("{prefix}-{room}"), "mallory");
    }
    let other = unique("staff");
    standin.add_participant(&other, "mallory");
    let reply = app.client.clone().ban_participant(ban(&format!("{prefix}-*"), "mallory", "")).await.unwrap();
    let mut removed = reply.into_inner().removed_from;
    removed.sort();
    assert_eq!(removed, [format!("{prefix}-a"), format!("{prefix}-b"), format!("{prefix}-c")]);
    assert!(standin.participant(&other, "mallory").is_some(), "a room the pattern does not match");
    let status = app.client.clone().create_token(token_for(&format!("{prefix}-z"), "mallory")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // Every room.
    let reply = app.client.clone().ban_participant(ban("*", "mallory", "")).await.unwrap().into_inner();
    assert_eq!(reply.removed_from, std::slice::from_ref(&other));
    let status = app.client.clone().create_token(token_for(&unique("any"), "mallory")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_caller_limited_to_rooms_bans_only_in_its_rooms_and_needs_the_scope() {
    let key = |name: &str, scopes: &[&str], rooms: &[&str]| roomcontrol::config::ApiKeyConfig {
        name: name.to_owned(),
        hash: roomcontrol::auth::hash_api_key(&format!("rck_{name}_0123456789abcdef0123")),
        scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
        rooms: rooms.iter().map(|room| room.to_string()).collect(),
        revoked: false,
    };
    let app = spawn_app_with(|config| {
        config.auth.api_keys = vec![
            key("teacher", &["participants:ban", "participants:moderate"], &["class-*"]),
            key("moderator", &["participants:moderate"], &["*"]),
        ];
    })
    .await;
    let as_key = |name: &str, request: BanParticipantRequest| {
        let mut request = tonic::Request::new(request);
        let value = format!("Bearer rck_{name}_0123456789abcdef0123").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
        request
    };
    let mut client = app.client.clone();
    client.ban_participant(as_key("teacher", ban("class-7", "mallory", ""))).await.expect("its own room");
    let status = client.ban_participant(as_key("teacher", ban("class-*", "mallory", ""))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("pattern"), "{}", status.message());
    let status = client.ban_participant(as_key("teacher", ban("staff", "mallory", ""))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = client.ban_participant(as_key("moderator", ban("class-7", "bob", ""))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("participants:ban"), "{}", status.message());
}

#[tokio::test]
async fn bad_ban_requests_are_refused_naming_the_field() {
    let app = spawn_app_with(|_| {}).await;
    let mut client = app.client.clone();
    let cases = [
        (BanParticipantRequest { identity: String::new(), ..ban("r", "x", "") }, "identity"),
        (BanParticipantRequest { room: String::new(), ..ban("r", "x", "") }, "room"),
        (BanParticipantRequest { reason: "x".repeat(513), ..ban("r", "x", "") }, "reason"),
        (
            BanParticipantRequest {
                duration: Some(prost_types::Duration { seconds: 0, nanos: 5 }),
                ..ban("r", "x", "")
            },
            "duration",
        ),
        (
            BanParticipantRequest {
                duration: Some(prost_types::Duration { seconds: -60, nanos: 0 }),
                ..ban("r", "x", "")
            },
            "duration",
        ),
    ];
    for (request, field) in cases {
        let status = client.ban_participant(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let fields: Vec<String> = status
            .get_details_bad_request()
            .expect("a BadRequest")
            .field_violations
            .into_iter()
            .map(|violation| violation.field)
            .collect();
        assert_eq!(fields, [field]);
    }
    let status = client.unban_participant(UnbanParticipantRequest { ban_id: "nope".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(client.list_bans(ListBansRequest::default()).await.unwrap().into_inner().bans.is_empty());
}

/// Two replicas on one PostgreSQL database: a ban made on one refuses
/// tokens on the other, and a join reported to the other is undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ban_made_on_one_replica_holds_on_another() {
    let database = TestDatabase::create(Kind::Postgres).await;
    let url = database.url.clone();
    let a = spawn_app_with(move |config| config.store.url = url).await;
    let Some(standin) = a.standin.clone() else { return };
    // Replica B: the same database, the same LiveKit; LiveKit's webhooks go
    // to B only.
    let mut config = test_config(&a.livekit);
    config.store.url = database.url.clone();
    let b = spawn_with_config(config, None, a.livekit.clone()).await;
    standin.set_webhook_urls([format!("{}/livekit/webhook", b.http_url())]);
    let room = unique("replicated");
    let mut stream = watch_room(&b, &room).await;

    let stored = a.client.clone().ban_participant(ban(&room, "mallory", "")).await.unwrap().into_inner().ban.unwrap();
    // B hears of the ban through PostgreSQL; its timeline shows it first.
    next_of(&mut stream, &["participant_banned"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match b.client.clone().create_token(token_for(&room, "mallory")).await {
            Err(status) if status.code() == Code::PermissionDenied => break,
            other => {
                assert!(tokio::time::Instant::now() < deadline, "replica B still mints for mallory: {other:?}");
                tokio::task::yield_now().await;
            }
        }
    }
    let joined_at = std::time::Instant::now();
    standin.add_participant(&room, "mallory");
    let enforced = next_of(&mut stream, &["ban_enforced"]).await;
    // A figure, not an assertion: the issue's target is within 1 s.
    eprintln!("a banned rejoin was removed by the other replica {:?} after the join", joined_at.elapsed());
    assert_eq!(
        enforced.detail.as_ref().unwrap().fields["banId"].kind,
        Some(prost_types::value::Kind::StringValue(stored.id.clone()))
    );
    assert!(standin.participant(&room, "mallory").is_none(), "removed by replica B");
    b.client.clone().unban_participant(UnbanParticipantRequest { ban_id: stored.id }).await.expect("lifted on B");
}

/// A removal LiveKit failed is retried by reconciliation: the ban holds.
#[tokio::test]
async fn reconciliation_removes_a_banned_identity_whose_removal_failed() {
    let app = spawn_app_with(|config| config.events.reconcile_interval = Duration::from_millis(200)).await;
    let Some(standin) = app.standin.clone() else { return };
    let room = unique("retried");
    standin.add_participant(&room, "mallory");
    let mut stream = watch_room(&app, &room).await;
    standin.fail_next(
        Some("RemoveParticipant"),
        livekit_standin::Fault::Http { status: 502, body: "bad gateway".into(), content_type: "text/plain".into() },
        // Two: a reconciliation pass may try (and fail) before the ban's own
        // removal does; the ban's then fails all the same.
        2,
    );
    let reply = app.client.clone().ban_participant(ban(&room, "mallory", "")).await.unwrap().into_inner();
    assert!(reply.removed_from.is_empty(), "{reply:?}");
    assert_eq!(reply.failed_rooms, std::slice::from_ref(&room));
    // (Reconciliation may already have removed it: it runs every 200 ms.)
    let enforced = next_of(&mut stream, &["ban_enforced"]).await;
    assert_eq!(enforced.participant.as_ref().unwrap().identity, "mallory");
    assert!(standin.participant(&room, "mallory").is_none(), "removed by reconciliation");
}
