//! One method on [`TestApp`] per RoomControl RPC, so a test reads
//! `app.create_room(request)` and gets the reply's message back.
//!
//! Each takes the message itself or a `tonic::Request` carrying metadata
//! (an authorization header, say), and calls over a clone of the app's
//! client: clones share its channel, and `&self` is enough.

use roomcontrol::proto::v1::*;
use tonic::metadata::MetadataKey;
use tonic::{IntoRequest, Response, Status};

use super::{Rpc, TestApp};

impl TestApp {
    pub async fn create_room(&self, request: impl IntoRequest<CreateRoomRequest>) -> Result<Room, Status> {
        self.client.clone().create_room(request).await.map(Response::into_inner)
    }

    pub async fn list_rooms(&self, request: impl IntoRequest<ListRoomsRequest>) -> Result<ListRoomsResponse, Status> {
        self.client.clone().list_rooms(request).await.map(Response::into_inner)
    }

    pub async fn get_room(&self, request: impl IntoRequest<GetRoomRequest>) -> Result<Room, Status> {
        self.client.clone().get_room(request).await.map(Response::into_inner)
    }

    pub async fn delete_room(
        &self,
        request: impl IntoRequest<DeleteRoomRequest>,
    ) -> Result<DeleteRoomResponse, Status> {
        self.client.clone().delete_room(request).await.map(Response::into_inner)
    }

    pub async fn update_room_metadata(
        &self,
        request: impl IntoRequest<UpdateRoomMetadataRequest>,
    ) -> Result<Room, Status> {
        self.client.clone().update_room_metadata(request).await.map(Response::into_inner)
    }

    pub async fn list_participants(
        &self,
        request: impl IntoRequest<ListParticipantsRequest>,
    ) -> Result<ListParticipantsResponse, Status> {
        self.client.clone().list_participants(request).await.map(Response::into_inner)
    }

    pub async fn get_participant(
        &self,
        request: impl IntoRequest<GetParticipantRequest>,
    ) -> Result<Participant, Status> {
        self.client.clone().get_participant(request).await.map(Response::into_inner)
    }

    pub async fn remove_participant(
        &self,
        request: impl IntoRequest<RemoveParticipantRequest>,
    ) -> Result<RemoveParticipantResponse, Status> {
        self.client.clone().remove_participant(request).await.map(Response::into_inner)
    }

    pub async fn update_participant(
        &self,
        request: impl IntoRequest<UpdateParticipantRequest>,
    ) -> Result<Participant, Status> {
        self.client.clone().update_participant(request).await.map(Response::into_inner)
    }

    pub async fn mute_published_track(
        &self,
        request: impl IntoRequest<MutePublishedTrackRequest>,
    ) -> Result<Track, Status> {
        self.client.clone().mute_published_track(request).await.map(Response::into_inner)
    }

    pub async fn update_subscriptions(
        &self,
        request: impl IntoRequest<UpdateSubscriptionsRequest>,
    ) -> Result<UpdateSubscriptionsResponse, Status> {
        self.client.clone().update_subscriptions(request).await.map(Response::into_inner)
    }

    pub async fn send_data(&self, request: impl IntoRequest<SendDataRequest>) -> Result<SendDataResponse, Status> {
        self.client.clone().send_data(request).await.map(Response::into_inner)
    }

    pub async fn create_token(
        &self,
        request: impl IntoRequest<CreateTokenRequest>,
    ) -> Result<CreateTokenResponse, Status> {
        self.client.clone().create_token(request).await.map(Response::into_inner)
    }

    /// Sends one call from a table of [`Rpc`]s; the reply's content is dropped.
    pub async fn call(&self, rpc: Rpc) -> Result<(), Status> {
        self.call_with(rpc, &[]).await
    }

    /// Like [`TestApp::call`], with these metadata entries on the request.
    pub async fn call_with(&self, rpc: Rpc, metadata: &[(&str, &str)]) -> Result<(), Status> {
        fn request<T>(message: T, metadata: &[(&str, &str)]) -> tonic::Request<T> {
            let mut request = tonic::Request::new(message);
            for (name, value) in metadata {
                let name = MetadataKey::from_bytes(name.as_bytes()).expect("a metadata name");
                request.metadata_mut().insert(name, value.parse().expect("a metadata value"));
            }
            request
        }
        match rpc {
            Rpc::CreateRoom(m) => self.create_room(request(m, metadata)).await.map(drop),
            Rpc::ListRooms(m) => self.list_rooms(request(m, metadata)).await.map(drop),
            Rpc::GetRoom(m) => self.get_room(request(m, metadata)).await.map(drop),
            Rpc::DeleteRoom(m) => self.delete_room(request(m, metadata)).await.map(drop),
            Rpc::UpdateRoomMetadata(m) => self.update_room_metadata(request(m, metadata)).await.map(drop),
            Rpc::ListParticipants(m) => self.list_participants(request(m, metadata)).await.map(drop),
            Rpc::GetParticipant(m) => self.get_participant(request(m, metadata)).await.map(drop),
            Rpc::RemoveParticipant(m) => self.remove_participant(request(m, metadata)).await.map(drop),
            Rpc::UpdateParticipant(m) => self.update_participant(request(m, metadata)).await.map(drop),
            Rpc::MutePublishedTrack(m) => self.mute_published_track(request(m, metadata)).await.map(drop),
            Rpc::UpdateSubscriptions(m) => self.update_subscriptions(request(m, metadata)).await.map(drop),
            Rpc::SendData(m) => self.send_data(request(m, metadata)).await.map(drop),
            Rpc::CreateToken(m) => self.create_token(request(m, metadata)).await.map(drop),
        }
    }
}
