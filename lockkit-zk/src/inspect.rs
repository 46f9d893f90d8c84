//! Inspection and administration: the live holder of a queue by the
//! server's clock, `current`, `list`, `force_release`, `cleanup_expired`.

use lockkit_core::{LockInfo, LockName, Result};
use zookeeper_client::Error as ZkError;

use crate::backend::ZkBackend;
use crate::error::classify;
use crate::layout::{Member, decode_name};
use crate::nodes::Deleted;
use crate::record::Node;
use crate::session::Generation;

impl ZkBackend {
    /// The queue of `name` with the server's clock: the live holder, if any.
    pub(crate) async fn holder(
        &self,
        generation: &Generation,
        lock: &str,
        server_now_ms: i64,
        members: &[Member],
    ) -> Result<(Option<Node>, Vec<Node>)> {
        let nodes = &self.inner.nodes;
        let paths: Vec<String> = members
            .iter()
            .map(|m| format!("{lock}/{}", m.node))
            .collect();
        let read = nodes.read(generation, &paths).await?;
        let mut expired = Vec::new();
        for node in read {
            if node.is_expired(server_now_ms, nodes.margin) {
                expired.push(node);
                continue;
            }
            let holder = node
                .is_live_holder(server_now_ms, nodes.margin)
                .then_some(node);
            return Ok((holder, expired));
        }
        Ok((None, expired))
    }

    pub(crate) async fn current_holder(&self, name: &LockName) -> Result<Option<LockInfo>> {
        let generation = self.inner.sessions.current();
        let nodes = &self.inner.nodes;
        let now_ms = nodes.server_now(&generation).await?;
        let lock = nodes.layout.lock(name);
        let Some(members) = nodes.members(&generation, &lock).await? else {
            return Ok(None);
        };
        let (holder, _) = self.holder(&generation, &lock, now_ms, &members).await?;
        Ok(holder.and_then(|h| h.info(name)))
    }

    pub(crate) async fn list_holders(&self) -> Result<Vec<LockInfo>> {
        let generation = self.inner.sessions.current();
        let nodes = &self.inner.nodes;
        let now_ms = nodes.server_now(&generation).await?;
        let dir = nodes.layout.locks_dir();
        let children = match generation.client.list_children(&dir).await {
            Ok(children) => children,
            Err(ZkError::NoNode) => return Ok(Vec::new()),
            Err(err) => return Err(classify(err, "listing locks")),
        };
        let named: Vec<(LockName, String)> = children
            .iter()
            .filter_map(|c| decode_name(c).map(|n| (n, format!("{dir}/{c}"))))
            .collect();
        let paths: Vec<String> = named.iter().map(|(_, p)| p.clone()).collect();
        let queues = nodes.queues(&generation, &paths).await?;
        let mut infos = Vec::new();
        for (lock, members) in queues {
            if members.is_empty() {
                continue;
            }
            let Some(name) = lock.rsplit('/').next().and_then(decode_name) else {
                continue;
            };
            let (holder, _) = self.holder(&generation, &lock, now_ms, &members).await?;
            if let Some(info) = holder.and_then(|h| h.info(&name)) {
                infos.push(info);
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    pub(crate) async fn force_release_holder(&self, name: &LockName) -> Result<bool> {
        let generation = self.inner.sessions.current();
        let nodes = &self.inner.nodes;
        let now_ms = nodes.server_now(&generation).await?;
        let lock = nodes.layout.lock(name);
        let Some(members) = nodes.members(&generation, &lock).await? else {
            return Ok(false);
        };
        let (holder, expired) = self.holder(&generation, &lock, now_ms, &members).await?;
        for node in &expired {
            nodes
                .delete(&generation, &node.path, Some(node.stat.version))
                .await?;
        }
        let removed = match holder {
            Some(node) => {
                tracing::warn!(lock = %name, path = %node.path, "force-releasing a held lock");
                nodes.delete(&generation, &node.path, None).await? == Deleted::Yes
            }
            None => false,
        };
        if !removed {
            nodes.delete_lock_if_empty(&generation, &lock).await?;
        }
        Ok(removed)
    }

    /// Deletes lease nodes whose TTL ran out by the server's clock (their
    /// holders stopped renewing but their sessions live on) and lock nodes
    /// left empty (ZooKeeper also reaps those, as container nodes, after
    /// its `znode.container.checkIntervalMs`).
    pub(crate) async fn cleanup_expired_nodes(&self) -> Result<u64> {
        let generation = self.inner.sessions.current();
        let nodes = &self.inner.nodes;
        let now_ms = nodes.server_now(&generation).await?;
        let dir = nodes.layout.locks_dir();
        let children = match generation.client.list_children(&dir).await {
            Ok(children) => children,
            Err(ZkError::NoNode) => return Ok(0),
            Err(err) => return Err(classify(err, "listing locks")),
        };
        let paths: Vec<String> = children.iter().map(|c| format!("{dir}/{c}")).collect();
        let mut removed = 0;
        for (lock, members) in nodes.queues(&generation, &paths).await? {
            let member_paths: Vec<String> = members
                .iter()
                .map(|m| format!("{lock}/{}", m.node))
                .collect();
            let read = nodes.read(&generation, &member_paths).await?;
            let mut left = read.len();
            for node in &read {
                if node.is_expired(now_ms, nodes.margin)
                    && nodes
                        .delete(&generation, &node.path, Some(node.stat.version))
                        .await?
                        == Deleted::Yes
                {
                    removed += 1;
                    left -= 1;
                }
            }
            if left == 0 {
                nodes.delete_lock_if_empty(&generation, &lock).await?;
            }
        }
        Ok(removed)
    }
}
