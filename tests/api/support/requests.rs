//! One method on [`TestApp`] per RoomControl RPC, so a test reads
//! `app.create_room(request)` and gets the reply's message back.
//!
//! Each takes the message itself or a `tonic::Request` carrying metadata
//! (an authorization header, say), and calls over a clone of the app's
//! client: clones share its channel, and `&self` is enough.

use roomcontrol::proto::v1::*;
use tonic::{IntoRequest, Response, Status};

use super::TestApp;

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
}
