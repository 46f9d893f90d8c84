//! Node-level building blocks: creating a lease node (protected), reading a
//! queue, deleting nodes with their empty lock node, the server's clock.

use std::time::Duration;

use lockkit_core::spi::AcquireRequest;
use lockkit_core::{Error, LeaseId, Result};
use tokio::time::Instant;
use zookeeper_client::{
    Acl, Acls, Client, CreateMode, CreateOptions, Error as ZkError, MultiReadResult,
    MultiWriteError, MultiWriteResult, Stat,
};

use crate::error::{KIND, classify, is_connection_problem};
use crate::layout::{Layout, Member, lease_prefix, queue};
use crate::record::{Node, Record, State};
use crate::session::Generation;

/// Most operations per multi request.
const MULTI_CHUNK: usize = 256;

/// A lease node this backend created.
#[derive(Debug, Clone)]
pub(crate) struct Created {
    pub(crate) path: String,
    pub(crate) stat: Stat,
    pub(crate) state: State,
    /// The lock node was created together with this node, so it is the
    /// only one in the queue.
    pub(crate) sole: bool,
}

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deleted {
    Yes,
    Missing,
    /// The node changed since it was read (version mismatch).
    Changed,
}

/// The parent path of a node path.
pub(crate) fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("/", |(parent, _)| parent)
}

/// ACL-aware node operations below one layout.
#[derive(Debug)]
pub(crate) struct Nodes {
    pub(crate) layout: Layout,
    acls: Vec<Acl>,
    pub(crate) margin: Duration,
}

impl Nodes {
    pub(crate) fn new(layout: Layout, acls: Vec<Acl>, margin: Duration) -> Self {
        Self {
            layout,
            acls,
            margin,
        }
    }

    fn options(&self, mode: CreateMode) -> CreateOptions<'_> {
        mode.with_acls(Acls::new(&self.acls))
    }

    /// Creates `<root>/locks` and `<root>/clock` if missing.
    pub(crate) async fn ensure_roots(&self, client: &Client) -> Result<()> {
        let dir = self.layout.locks_dir();
        client
            .mkdir(&dir, &self.options(CreateMode::Persistent))
            .await
            .map_err(|e| classify(e, &format!("creating {dir:?}")))?;
        let clock = self.layout.clock();
        match client
            .create(&clock, b"", &self.options(CreateMode::Persistent))
            .await
        {
            Ok(_) | Err(ZkError::NodeExists) => Ok(()),
            Err(e) => Err(classify(e, &format!("creating {clock:?}"))),
        }
    }

    /// The server's clock (ms since the epoch), read as the mtime of a
    /// write to `<root>/clock`. With several servers this is the leader's
    /// clock, the same clock that stamps every lease node's mtime.
    pub(crate) async fn server_now(&self, generation: &Generation) -> Result<i64> {
        let clock = self.layout.clock();
        for _ in 0..2 {
            let sent_at = Instant::now();
            let result = generation.client.set_data(&clock, b"", None).await;
            generation.observe(sent_at, &result);
            match result {
                Ok(stat) => return Ok(stat.mtime),
                Err(ZkError::NoNode) => self.ensure_roots(&generation.client).await?,
                Err(e) => return Err(classify(e, "reading the server clock")),
            }
        }
        Err(Error::backend(
            KIND,
            format!("{clock:?} keeps disappearing"),
            None,
        ))
    }

    /// Creates the lease node of `req` under `lock` (the Curator
    /// "protected" pattern: its name carries the lease id, so after a lost
    /// reply the node is found again instead of orphaned).
    ///
    /// First tries to create the lock node and the lease node in one
    /// transaction (a free lock: one round trip, and the lease node is
    /// alone); if the lock node exists, creates the lease node in `state`.
    pub(crate) async fn create(
        &self,
        generation: &Generation,
        lock: &str,
        req: &AcquireRequest,
        state: State,
    ) -> Result<Created> {
        let prefix = lease_prefix(lock, &req.lease_id);
        let held =
            Record::new(State::Held, req.ttl, &req.lease_id, &req.owner, req.permits).encode();
        let queued = Record::new(state, req.ttl, &req.lease_id, &req.owner, req.permits).encode();
        let client = &generation.client;
        let bad_args = |e: ZkError| classify(e, "preparing a lease node");
        for _ in 0..32 {
            let sent_at = Instant::now();
            let mut writer = client.new_multi_writer();
            writer
                .add_create(lock, b"", &self.options(CreateMode::Container))
                .map_err(bad_args)?;
            writer
                .add_create(
                    &prefix,
                    &held,
                    &self.options(CreateMode::EphemeralSequential),
                )
                .map_err(bad_args)?;
            match writer.commit().await {
                Ok(results) => {
                    generation.touch(sent_at);
                    let Some(MultiWriteResult::Create { path, stat }) = results.into_iter().nth(1)
                    else {
                        return Err(Error::backend(KIND, "unexpected multi reply", None));
                    };
                    let stat = self.fresh_stat(generation, &path, stat).await?;
                    return Ok(Created {
                        path,
                        stat,
                        state: State::Held,
                        sole: true,
                    });
                }
                Err(MultiWriteError::OperationFailed {
                    index: 0,
                    source: ZkError::NodeExists,
                }) => generation.touch(sent_at),
                Err(MultiWriteError::OperationFailed {
                    index: 0,
                    source: ZkError::NoNode,
                }) => {
                    generation.touch(sent_at);
                    self.ensure_roots(client).await?;
                    continue;
                }
                Err(err) => {
                    let err = ZkError::from(err);
                    if is_connection_problem(&err) {
                        if let Some(found) = self.find_own(generation, lock, &req.lease_id).await? {
                            return Ok(found);
                        }
                        continue;
                    }
                    return Err(classify(err, "creating a lease node"));
                }
            }
            let sent_at = Instant::now();
            let result = client
                .create(
                    &prefix,
                    &queued,
                    &self.options(CreateMode::EphemeralSequential),
                )
                .await;
            generation.observe(sent_at, &result);
            match result {
                Ok((stat, sequence)) => {
                    let path = format!("{prefix}{sequence}");
                    let stat = self.fresh_stat(generation, &path, stat).await?;
                    return Ok(Created {
                        path,
                        stat,
                        state,
                        sole: false,
                    });
                }
                // The lock node went away in between: try both again.
                Err(ZkError::NoNode) => {}
                Err(err) if is_connection_problem(&err) => {
                    if let Some(found) = self.find_own(generation, lock, &req.lease_id).await? {
                        return Ok(found);
                    }
                }
                Err(err) => return Err(classify(err, "creating a lease node")),
            }
        }
        Err(Error::transient(
            KIND,
            format!("could not create a lease node under {lock:?} (it keeps changing)"),
            None,
        ))
    }

    /// Servers before 3.7 may return an invalid stat for creates in a
    /// multi; read it then.
    async fn fresh_stat(&self, generation: &Generation, path: &str, stat: Stat) -> Result<Stat> {
        if !stat.is_invalid() {
            return Ok(stat);
        }
        let (_, stat) = generation
            .client
            .get_data(path)
            .await
            .map_err(|e| classify(e, "reading a new lease node"))?;
        Ok(stat)
    }

    /// Finds the node of `lease_id` under `lock` after a create whose reply
    /// was lost.
    async fn find_own(
        &self,
        generation: &Generation,
        lock: &str,
        lease_id: &LeaseId,
    ) -> Result<Option<Created>> {
        let client = &generation.client;
        match client.sync(lock).await {
            Ok(()) | Err(ZkError::NoNode) => {}
            Err(e) => return Err(classify(e, "syncing after a lost reply")),
        }
        let children = match client.list_children(lock).await {
            Ok(children) => children,
            Err(ZkError::NoNode) => return Ok(None),
            Err(e) => return Err(classify(e, "looking for a lease node after a lost reply")),
        };
        let Some(member) = queue(&children).into_iter().find(|m| m.is_for(lease_id)) else {
            return Ok(None);
        };
        let path = format!("{lock}/{}", member.node);
        match client.get_data(&path).await {
            Ok((data, stat)) => Ok(Some(Created {
                path,
                stat,
                state: Record::decode(&data).map_or(State::Waiting, |r| r.state),
                sole: false,
            })),
            Err(ZkError::NoNode) => Ok(None),
            Err(e) => Err(classify(e, "reading a found lease node")),
        }
    }

    /// The queue of `lock`, in order; `None` if the lock node is missing.
    pub(crate) async fn members(
        &self,
        generation: &Generation,
        lock: &str,
    ) -> Result<Option<Vec<Member>>> {
        let sent_at = Instant::now();
        let result = generation.client.list_children(lock).await;
        generation.observe(sent_at, &result);
        match result {
            Ok(children) => Ok(Some(queue(&children))),
            Err(ZkError::NoNode) => Ok(None),
            Err(e) => Err(classify(e, "listing a lock's queue")),
        }
    }

    /// Reads the nodes at `paths` (in order), skipping vanished ones.
    pub(crate) async fn read(
        &self,
        generation: &Generation,
        paths: &[String],
    ) -> Result<Vec<Node>> {
        let mut nodes = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(MULTI_CHUNK) {
            let mut reader = generation.client.new_multi_reader();
            for path in chunk {
                reader
                    .add_get_data(path)
                    .map_err(|e| classify(e, "preparing a read"))?;
            }
            let sent_at = Instant::now();
            let result = reader.commit().await;
            generation.observe(sent_at, &result);
            let results = result.map_err(|e| classify(e, "reading lease nodes"))?;
            for (path, result) in chunk.iter().zip(results) {
                match result {
                    MultiReadResult::Data { data, stat } => nodes.push(Node {
                        path: path.clone(),
                        record: Record::decode(&data),
                        stat,
                    }),
                    MultiReadResult::Error {
                        err: ZkError::NoNode,
                    } => {}
                    MultiReadResult::Error { err } => {
                        return Err(classify(err, "reading a lease node"));
                    }
                    _ => {
                        return Err(Error::backend(KIND, "unexpected multi-read reply", None));
                    }
                }
            }
        }
        Ok(nodes)
    }

    /// Lists several locks' queues at once: `(lock path, members)` for the
    /// locks that still exist.
    pub(crate) async fn queues(
        &self,
        generation: &Generation,
        locks: &[String],
    ) -> Result<Vec<(String, Vec<Member>)>> {
        let mut out = Vec::with_capacity(locks.len());
        for chunk in locks.chunks(MULTI_CHUNK) {
            let mut reader = generation.client.new_multi_reader();
            for lock in chunk {
                reader
                    .add_get_children(lock)
                    .map_err(|e| classify(e, "preparing a read"))?;
            }
            let results = reader
                .commit()
                .await
                .map_err(|e| classify(e, "listing lock queues"))?;
            for (lock, result) in chunk.iter().zip(results) {
                match result {
                    MultiReadResult::Children { children } => {
                        out.push((lock.clone(), queue(&children)));
                    }
                    MultiReadResult::Error {
                        err: ZkError::NoNode,
                    } => {}
                    MultiReadResult::Error { err } => {
                        return Err(classify(err, "listing a lock queue"));
                    }
                    _ => {
                        return Err(Error::backend(KIND, "unexpected multi-read reply", None));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deletes a lease node (only at `version`, if given) and, in the same
    /// transaction, its lock node if that leaves it empty; when other nodes
    /// were there, deletes the lease node alone. For a caller whose own
    /// node stays in the queue (clearing the way, removing duplicates):
    /// the lock node cannot become empty.
    pub(crate) async fn delete(
        &self,
        generation: &Generation,
        path: &str,
        version: Option<i32>,
    ) -> Result<Deleted> {
        self.delete_node(generation, path, version, false).await
    }

    /// [`delete`](Self::delete), and when other nodes were there, then the
    /// lock node if it has become empty meanwhile (releases, admin
    /// deletes): holders of a semaphore releasing at once each see the
    /// others' nodes, and the last one's attempt removes the lock node,
    /// so no empty one is left for the server's container sweep.
    pub(crate) async fn delete_and_tidy(
        &self,
        generation: &Generation,
        path: &str,
        version: Option<i32>,
    ) -> Result<Deleted> {
        self.delete_node(generation, path, version, true).await
    }

    async fn delete_node(
        &self,
        generation: &Generation,
        path: &str,
        version: Option<i32>,
        tidy: bool,
    ) -> Result<Deleted> {
        let client = &generation.client;
        let mut writer = client.new_multi_writer();
        writer
            .add_delete(path, version)
            .and_then(|()| writer.add_delete(parent_of(path), None))
            .map_err(|e| classify(e, "preparing a delete"))?;
        let sent_at = Instant::now();
        match writer.commit().await {
            Ok(_) => {
                generation.touch(sent_at);
                return Ok(Deleted::Yes);
            }
            Err(MultiWriteError::OperationFailed { index: 0, source }) => {
                generation.touch(sent_at);
                return match source {
                    ZkError::NoNode => Ok(Deleted::Missing),
                    ZkError::BadVersion => Ok(Deleted::Changed),
                    other => Err(classify(other, "deleting a lease node")),
                };
            }
            // Others are queued: delete the lease node alone.
            Err(MultiWriteError::OperationFailed { .. }) => generation.touch(sent_at),
            Err(MultiWriteError::RequestFailed { source }) => {
                return Err(classify(source, "deleting a lease node"));
            }
        }
        let sent_at = Instant::now();
        let result = client.delete(path, version).await;
        generation.observe(sent_at, &result);
        match result {
            Ok(()) => {
                // The container sweep would still remove an empty lock
                // node, and the lease node is gone either way: a failure
                // here is no error.
                let lock = parent_of(path);
                if !tidy {
                    return Ok(Deleted::Yes);
                }
                if let Err(err) = self.delete_lock_if_empty(generation, lock).await {
                    tracing::debug!(%lock, error = %err, "could not remove an empty lock node");
                }
                Ok(Deleted::Yes)
            }
            Err(ZkError::NoNode) => Ok(Deleted::Missing),
            Err(ZkError::BadVersion) => Ok(Deleted::Changed),
            Err(e) => Err(classify(e, "deleting a lease node")),
        }
    }

    /// Deletes a lock node if it is empty; ignores "not empty" and "gone".
    pub(crate) async fn delete_lock_if_empty(
        &self,
        generation: &Generation,
        lock: &str,
    ) -> Result<()> {
        match generation.client.delete(lock, None).await {
            Ok(()) | Err(ZkError::NoNode | ZkError::NotEmpty) => Ok(()),
            Err(e) => Err(classify(e, "deleting an empty lock node")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents() {
        assert_eq!(parent_of("/a/b/c"), "/a/b");
        assert_eq!(parent_of("/a"), "");
    }
}
