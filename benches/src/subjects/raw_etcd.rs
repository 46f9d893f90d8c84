//! The raw etcd lock: a transaction that puts the key if it has never
//! been created (`create_revision == 0`), and a delete — the floor for
//! lockkit's etcd backend (which also attaches its session's lease).

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use crate::subject::{Client, Family, Grant, Held, Result, Subject, retry_every_ms};

/// Raw transactions against the etcd endpoints given.
pub struct RawEtcd {
    endpoints: Vec<String>,
}

impl RawEtcd {
    /// Subject on `endpoints` (`host:port`).
    pub fn new(endpoints: Vec<String>) -> Self {
        Self { endpoints }
    }

    /// A new client.
    pub async fn connect(&self) -> Result<etcd_client::Client> {
        Ok(etcd_client::Client::connect(&self.endpoints, None).await?)
    }
}

#[async_trait]
impl Subject for RawEtcd {
    fn label(&self) -> String {
        "raw txn put-if-absent + delete".into()
    }

    fn family(&self) -> Family {
        Family::Raw
    }

    fn can_wait(&self) -> bool {
        false
    }

    async fn client(&self) -> Result<Box<dyn Client>> {
        Ok(Box::new(RawEtcdClient {
            client: self.connect().await?,
            owner: crate::subjects::unique_owner(),
        }))
    }
}

struct RawEtcdClient {
    client: etcd_client::Client,
    owner: String,
}

#[async_trait]
impl Client for RawEtcdClient {
    async fn acquire(&self, lock: &str, wait: Duration) -> Result<Option<Grant>> {
        let key = format!("/bench-raw/{lock}");
        retry_every_ms(wait, || async {
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), self.owner.as_str(), None)]);
            let mut kv = self.client.kv_client();
            if !kv.txn(txn).await?.succeeded() {
                return Ok(None);
            }
            Ok(Some(Grant {
                token: None,
                held: Box::new(RawEtcdHeld {
                    client: self.client.clone(),
                    key: key.clone(),
                }),
            }))
        })
        .await
    }
}

struct RawEtcdHeld {
    client: etcd_client::Client,
    key: String,
}

#[async_trait]
impl Held for RawEtcdHeld {
    async fn release(self: Box<Self>) -> Result<()> {
        self.client
            .kv_client()
            .delete(self.key.as_str(), None)
            .await?;
        Ok(())
    }
}
