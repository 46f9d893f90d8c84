//! Inspection and administration: the live holders of a queue by the
//! server's clock, `holders`, `list`, `force_release`, `cleanup_expired`.

use lockkit_core::{LockInfo, LockName, Result};
use zookeeper_client::Error as ZkError;

use crate::admission;
use crate::backend::ZkBackend;
use crate::error::classify;
use crate::layout::{Member, decode_name};
use crate::nodes::Deleted;
use crate::record::Node;
use crate::session::Generation;

impl ZkBackend {
    /// The queue of a lock with the server's clock: the nodes that hold a
    /// permit (the first live nodes, as `admission::holders` rules), in
    /// queue order, and the expired nodes.
    pub(crate) async fn holder_nodes(
        &self,
        generation: &Generation,
        lock: &str,
        server_now_ms: i64,
        members: &[Member],
    ) -> Result<(Vec<Node>, Vec<Node>)> {
        let nodes = &self.inner.nodes;
        let paths: Vec<String> = members
            .iter()
            .map(|m| format!("{lock}/{}", m.node))
            .collect();
        let read = nodes.read(generation, &paths).await?;
        let (expired, live): (Vec<Node>, Vec<Node>) = read
            .into_iter()
            .partition(|node| node.is_expired(server_now_ms, nodes.margin));
        Ok((admission::holders(live), expired))
    }

    pub(crate) async fn holders_of(&self, name: &LockName) -> Result<Vec<LockInfo>> {
        let generation = self.inner.sessions.current();
        let nodes = &self.inner.nodes;
        let now_ms = nodes.server_now(&generation).await?;
        let lock = nodes.layout.lock(name);
        let Some(members) = nodes.members(&generation, &lock).await? else {
            return Ok(Vec::new());
        };
        let (holders, _) = self
            .holder_nodes(&generation, &lock, now_ms, &members)
            .await?;
        let mut infos: Vec<LockInfo> = holders.iter().filter_map(|h| h.info(name)).collect();
        infos.sort_by_key(|info| info.token);
        Ok(infos)
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
            let (holders, _) = self
                .holder_nodes(&generation, &lock, now_ms, &members)
                .await?;
            infos.extend(holders.iter().filter_map(|h| h.info(&name)));
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name).then(a.token.cmp(&b.token)));
        Ok(infos)
    }

    /// Deletes every node holding a permit of `name` (and expired nodes);
    /// the holders' node watches fire their loss signals.
    pub(crate) async fn force_release_holders(&self, name: &LockName) -> Result<bool> {
        let generation = self.inner.sessions.current();
        let nodes = &self.inner.nodes;
        let now_ms = nodes.server_now(&generation).await?;
        let lock = nodes.layout.lock(name);
        let Some(members) = nodes.members(&generation, &lock).await? else {
            return Ok(false);
        };
        let (holders, expired) = self
            .holder_nodes(&generation, &lock, now_ms, &members)
            .await?;
        for node in &expired {
            nodes
                .delete(&generation, &node.path, Some(node.stat.version))
                .await?;
        }
        let mut removed = false;
        for node in &holders {
            tracing::warn!(lock = %name, path = %node.path, "force-releasing a held permit");
            removed |= nodes.delete(&generation, &node.path, None).await? == Deleted::Yes;
        }
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
