//! The raw ZooKeeper lock: create an ephemeral node, delete it — the
//! floor for lockkit's ZooKeeper backend (which queues with sequential
//! nodes and watches its predecessor).

use std::time::Duration;

use async_trait::async_trait;
use zookeeper_client::{Acls, CreateMode};

use crate::subject::{Client, Family, Grant, Held, Result, Subject, retry_every_ms};

const ROOT: &str = "/bench-raw";

/// Raw node operations against `hosts` (`h1:p1,h2:p2`).
pub struct RawZk {
    hosts: String,
}

impl RawZk {
    /// Subject on `hosts`; creates the parent node.
    pub async fn new(hosts: &str) -> Result<Self> {
        let this = Self {
            hosts: hosts.to_owned(),
        };
        let client = this.connect().await?;
        let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
        match client.create(ROOT, b"", &options).await {
            Ok(_) | Err(zookeeper_client::Error::NodeExists) => Ok(this),
            Err(e) => Err(e.into()),
        }
    }

    /// A new session.
    pub async fn connect(&self) -> Result<zookeeper_client::Client> {
        Ok(zookeeper_client::Client::connect(&self.hosts).await?)
    }
}

#[async_trait]
impl Subject for RawZk {
    fn label(&self) -> String {
        "raw create + delete".into()
    }

    fn family(&self) -> Family {
        Family::Raw
    }

    fn can_wait(&self) -> bool {
        false
    }

    async fn client(&self) -> Result<Box<dyn Client>> {
        Ok(Box::new(RawZkClient {
            client: self.connect().await?,
        }))
    }
}

struct RawZkClient {
    client: zookeeper_client::Client,
}

#[async_trait]
impl Client for RawZkClient {
    async fn acquire(&self, lock: &str, wait: Duration) -> Result<Option<Grant>> {
        let path = format!("{ROOT}/{lock}");
        retry_every_ms(wait, || async {
            let options = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
            match self.client.create(&path, b"", &options).await {
                Ok(_) => Ok(Some(Grant {
                    token: None,
                    held: Box::new(RawZkHeld {
                        client: self.client.clone(),
                        path: path.clone(),
                    }),
                })),
                Err(zookeeper_client::Error::NodeExists) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }
}

struct RawZkHeld {
    client: zookeeper_client::Client,
    path: String,
}

#[async_trait]
impl Held for RawZkHeld {
    async fn release(self: Box<Self>) -> Result<()> {
        self.client.delete(&self.path, None).await?;
        Ok(())
    }
}
