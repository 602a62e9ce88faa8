//! The browser console's files, served at /console/ beside the API.

use crate::support::spawn_app_with;

#[tokio::test]
async fn the_console_is_served_at_console_with_the_api_on_the_same_port() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<!doctype html><title>RoomControl console</title>").unwrap();
    std::fs::write(dir.path().join("app.js"), "console.log('hi')").unwrap();
    let console_dir = dir.path().to_owned();
    let app = spawn_app_with(move |config| config.console.dir = console_dir).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let base = app.http_url();

    let bare = http.get(format!("{base}/console")).send().await.unwrap();
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/console/");
    let index = http.get(format!("{base}/console/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(index.text().await.unwrap().contains("RoomControl console"));
    let script = http.get(format!("{base}/console/app.js")).send().await.unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.headers()["content-type"].to_str().unwrap().contains("javascript"));
    let route = http.get(format!("{base}/console/rooms/standup")).send().await.unwrap();
    assert!(route.text().await.unwrap().contains("RoomControl console"), "client-side routes get index.html");

    let token = app
        .grpc_web()
        .call(
            "CreateToken",
            &roomcontrol::proto::v1::CreateTokenRequest {
                room: "r".into(),
                identity: "i".into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(token.code(), tonic::Code::Ok, "the API still answers on the same port");
}

#[tokio::test]
async fn without_a_built_console_the_path_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-built");
    let app = spawn_app_with(move |config| config.console.dir = missing).await;
    let response = reqwest::get(format!("{}/console/", app.http_url())).await.unwrap();
    let served_html = response.headers().get("content-type").is_some_and(|v| v.to_str().unwrap_or("").contains("html"));
    assert!(!served_html, "no console files without a build");
}
