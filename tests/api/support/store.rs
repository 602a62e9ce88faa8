//! Databases for the tests: a SQLite file in a temporary directory, or a
//! PostgreSQL database of its own on 127.0.0.1:5432 (created here, dropped
//! when the test ends).

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

/// The PostgreSQL server every machine runs (trust authentication).
pub const POSTGRES_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A database that lives as long as the test holds it.
pub struct TestDatabase {
    pub url: String,

    postgres_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn create(kind: Kind) -> TestDatabase {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("roomcontrol.db").display());
                TestDatabase { url, postgres_name: None, _dir: Some(dir) }
            }
            Kind::Postgres => {
                static COUNTER: AtomicU64 = AtomicU64::new(0);
                let name = format!(
                    "roomcontrol_test_{}_{}_{:04x}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    rand::random::<u16>()
                );
                let mut admin = sqlx::PgConnection::connect(&format!("{POSTGRES_SERVER}/postgres"))
                    .await
                    .expect("PostgreSQL answers on 127.0.0.1:5432 (trust authentication)");
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
                let _ = admin.close().await;
                TestDatabase { url: format!("{POSTGRES_SERVER}/{name}"), postgres_name: Some(name), _dir: None }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.postgres_name.take() else {
            return;
        };
        // Drop runs outside async: a thread of its own with its own runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{POSTGRES_SERVER}/postgres")).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await;
                }
            });
        })
        .join();
    }
}

/// Runs one test body on SQLite and on PostgreSQL: `both_stores!(name, body_fn)`
/// defines `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_stores {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body($crate::support::store::Kind::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body($crate::support::store::Kind::Postgres).await;
            }
        }
    };
}
