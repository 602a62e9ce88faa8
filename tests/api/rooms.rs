//! CreateRoom, ListRooms, GetRoom, DeleteRoom, UpdateRoomMetadata.

use roomcontrol::proto::v1::*;
use tonic::Code;

use crate::support::{spawn_app, unique};

#[tokio::test]
async fn create_room_returns_the_room_with_the_options_asked_for() {
    let app = spawn_app().await;
    let name = unique("create");
    let room = app
        .create_room(CreateRoomRequest {
            name: name.clone(),
            empty_timeout: 120,
            departure_timeout: 30,
            max_participants: 8,
            metadata: r#"{"topic":"standup"}"#.to_owned(),
            agents: Vec::new(),
        })
        .await
        .expect("CreateRoom succeeds");
    assert_eq!(room.name, name);
    assert!(room.sid.starts_with("RM_"), "sid {:?}", room.sid);
    assert_eq!((room.empty_timeout, room.departure_timeout, room.max_participants), (120, 30, 8));
    assert_eq!(room.metadata, r#"{"topic":"standup"}"#);
    assert_eq!((room.num_participants, room.num_publishers), (0, 0));
    let created = room.creation_time.expect("a creation time");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((created.seconds - now).abs() < 60, "created {created:?}, now {now}");
}

#[tokio::test]
async fn create_room_uses_livekit_defaults_for_unset_timeouts() {
    let app = spawn_app().await;
    let room = app.create_room(CreateRoomRequest { name: unique("defaults"), ..Default::default() }).await.unwrap();
    assert_eq!((room.empty_timeout, room.departure_timeout, room.max_participants), (300, 20, 0));
}

#[tokio::test]
async fn create_room_twice_returns_the_existing_room_unchanged() {
    let app = spawn_app().await;
    let name = unique("upsert");
    let first = app
        .create_room(CreateRoomRequest { name: name.clone(), metadata: "first".into(), ..Default::default() })
        .await
        .unwrap();
    let second = app
        .create_room(CreateRoomRequest { name: name.clone(), metadata: "second".into(), ..Default::default() })
        .await
        .expect("an existing room is not an error");
    assert_eq!(second.sid, first.sid);
    assert_eq!(second.metadata, "first");
}

#[tokio::test]
async fn list_rooms_lists_every_room_or_only_the_names_asked_for() {
    let app = spawn_app().await;
    let names = [unique("list-a"), unique("list-b"), unique("list-c")];
    for name in &names {
        app.create_room(CreateRoomRequest { name: name.clone(), ..Default::default() }).await.unwrap();
    }
    let all = app.list_rooms(ListRoomsRequest::default()).await.unwrap().rooms;
    for name in &names {
        assert!(all.iter().any(|room| &room.name == name), "{name} listed");
    }
    let filtered = app
        .list_rooms(ListRoomsRequest { names: vec![names[0].clone(), names[2].clone(), unique("absent")] })
        .await
        .unwrap()
        .rooms;
    let mut listed: Vec<_> = filtered.into_iter().map(|room| room.name).collect();
    listed.sort();
    let mut expected = vec![names[0].clone(), names[2].clone()];
    expected.sort();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn get_room_returns_one_room_and_not_found_when_absent() {
    let app = spawn_app().await;
    let name = unique("get");
    let created = app.create_room(CreateRoomRequest { name: name.clone(), ..Default::default() }).await.unwrap();
    let room = app.get_room(GetRoomRequest { name: name.clone() }).await.unwrap();
    assert_eq!(room.sid, created.sid);

    let missing = unique("missing");
    let status = app.get_room(GetRoomRequest { name: missing.clone() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains(&missing), "{}", status.message());
}

#[tokio::test]
async fn delete_room_removes_it_and_answers_not_found_the_second_time() {
    let app = spawn_app().await;
    let name = unique("delete");
    app.create_room(CreateRoomRequest { name: name.clone(), ..Default::default() }).await.unwrap();
    app.delete_room(DeleteRoomRequest { name: name.clone() }).await.expect("DeleteRoom succeeds");
    let status = app.get_room(GetRoomRequest { name: name.clone() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let status = app.delete_room(DeleteRoomRequest { name }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("requested room does not exist"), "{}", status.message());
}

#[tokio::test]
async fn update_room_metadata_replaces_it_and_answers_not_found_for_a_missing_room() {
    let app = spawn_app().await;
    let name = unique("metadata");
    app.create_room(CreateRoomRequest { name: name.clone(), metadata: "old".into(), ..Default::default() })
        .await
        .unwrap();
    let room = app
        .update_room_metadata(UpdateRoomMetadataRequest { room: name.clone(), metadata: "new".into() })
        .await
        .expect("UpdateRoomMetadata succeeds");
    assert_eq!(room.metadata, "new");
    let fetched = app.get_room(GetRoomRequest { name }).await.unwrap();
    assert_eq!(fetched.metadata, "new");

    let status = app
        .update_room_metadata(UpdateRoomMetadataRequest { room: unique("missing"), metadata: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}
