//! The catalog on a real SQLite file and a real (private) Postgres server:
//! the same properties, run on both, reading the stored rows back with a
//! pool of their own.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use lockkit_dag::catalog::LintProblem;
use lockkit_dag::{Catalog, DagError, Spec};

const SEED: &str = "
tasks:
  - {name: NodeA, command: echo a}
  - name: NodeB
    type: task
    input: input_path/XXX.csv
    output: output_path/table_name
    notebook: notebook_path
    lock: {lock_status: enable, lock_duration: 10 mins}
  - {name: NodeC, command: echo c}
  - {name: NodeD, command: echo d}
  - {name: NodeE, command: echo e}
pipelines:
  - {name: DAG1, flow: Start -> NodeA -> NodeB -> NodeC -> End}
  - {name: DAG2, flow: Start -> NodeD -> NodeB -> NodeE -> End}
";

fn spec(yaml: &str) -> Spec {
    Spec::from_texts([(Path::new("test.yaml"), yaml)]).unwrap()
}

/// A database the test can read directly.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Raw {
    /// Every row of the spec tables, as text, in a fixed order.
    async fn rows(&self) -> Vec<String> {
        const QUERIES: [&str; 4] = [
            "SELECT name || '|' || kind || '|' || action || '|' || COALESCE(input, '') || '|' || COALESCE(output, '') || '|' || COALESCE(lock_name, '') || '|' || COALESCE(CAST(lock_ttl_ms AS TEXT), '') || '|' || COALESCE(lock_policy, '') FROM lockkit_tasks ORDER BY name",
            "SELECT name FROM lockkit_pipelines ORDER BY name",
            "SELECT pipeline || '|' || task || '|' || CAST(position AS TEXT) FROM lockkit_pipeline_nodes ORDER BY pipeline, position",
            "SELECT pipeline || '|' || depends_on || '->' || task FROM lockkit_dependencies ORDER BY pipeline, depends_on, task",
        ];
        let mut rows = Vec::new();
        for query in QUERIES {
            let found: Vec<String> = match self {
                Self::Sqlite(pool) => sqlx::query_scalar(query).fetch_all(pool).await.unwrap(),
                Self::Postgres(pool) => sqlx::query_scalar(query).fetch_all(pool).await.unwrap(),
            };
            rows.extend(found);
        }
        rows
    }
}

/// Loading the same spec twice writes nothing the second time and leaves
/// the same rows; a changed spec replaces the old one as a whole.
async fn load_is_idempotent_and_a_change_replaces(catalog: &Catalog, raw: &Raw) {
    let seed = spec(SEED);
    let first = catalog.load(&seed).await.unwrap();
    assert!(first.changed);
    assert_eq!((first.tasks, first.pipelines), (5, 2));
    let rows = raw.rows().await;
    assert!(
        rows.contains(&"NodeB|notebook|notebook_path|input_path/XXX.csv|output_path/table_name|NodeB|600000|wait".to_owned()),
        "{rows:#?}"
    );
    assert!(rows.contains(&"DAG2|NodeD->NodeB".to_owned()), "{rows:#?}");
    assert!(rows.contains(&"DAG1|NodeC|2".to_owned()), "{rows:#?}");
    assert_eq!(rows.len(), 5 + 2 + 6 + 4, "{rows:#?}");

    let again = catalog.load(&seed).await.unwrap();
    assert!(!again.changed, "{again:?}");
    assert_eq!(raw.rows().await, rows, "loading the same spec changed rows");
    assert_eq!(catalog.spec().await.unwrap(), seed);

    let changed = spec(
        "
tasks:
  - {name: NodeA, command: echo a}
  - {name: NodeB, notebook: notebook_path, lock: {lock_status: enable, lock_duration: 5m}}
  - {name: NodeC, command: echo c}
  - {name: NodeD, command: echo d}
  - {name: NodeF, command: echo f}
pipelines:
  - {name: DAG1, flow: Start -> NodeA -> NodeB -> NodeC -> End}
  - name: DAG3
    nodes:
      - {task: NodeD}
      - {task: NodeF, depends_on: [NodeD]}
",
    );
    let report = catalog.load(&changed).await.unwrap();
    assert!(report.changed);
    assert_eq!(report.added, ["task NodeF", "pipeline DAG3"]);
    assert_eq!(report.changed_items, ["task NodeB"]);
    assert_eq!(report.removed, ["task NodeE", "pipeline DAG2"]);
    assert_eq!(catalog.spec().await.unwrap(), changed);
    let rows = raw.rows().await;
    assert!(
        !rows
            .iter()
            .any(|r| r.contains("NodeE") || r.contains("DAG2")),
        "{rows:#?}"
    );
    assert!(rows.contains(&"DAG3|NodeD->NodeF".to_owned()), "{rows:#?}");
}

/// `shared` finds NodeB in both pipelines; `lint` reports a shared task
/// without a lock, one lock name with two durations, and one output
/// written by tasks not under one lock.
async fn shared_and_lint(catalog: &Catalog) {
    catalog.load(&spec(SEED)).await.unwrap();
    let shared = catalog.shared_tasks().await.unwrap();
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert_eq!(shared[0].task, "NodeB");
    assert_eq!(shared[0].pipelines, ["DAG1", "DAG2"]);
    assert_eq!(
        shared[0].lock,
        Some(("NodeB".to_owned(), Duration::from_secs(600)))
    );
    assert_eq!(catalog.lint().await.unwrap(), []);

    catalog
        .load(&spec(
            "
tasks:
  - {name: A, command: x}
  - {name: B, command: x, output: warehouse.orders}
  - {name: C, command: x, output: warehouse.orders}
  - {name: L1, command: x, lock: {lock_status: enable, lock_duration: 1m, lock_name: shared}}
  - {name: L2, command: x, lock: {lock_status: enable, lock_duration: 2m, lock_name: shared}}
pipelines:
  - {name: P1, flow: Start -> A -> B -> L1 -> End}
  - {name: P2, flow: Start -> A -> C -> L2 -> End}
",
        ))
        .await
        .unwrap();
    let shared = catalog.shared_tasks().await.unwrap();
    assert_eq!(shared.len(), 1);
    assert_eq!(
        (shared[0].task.as_str(), shared[0].lock.clone()),
        ("A", None)
    );
    let problems = catalog.lint().await.unwrap();
    assert_eq!(
        problems,
        [
            LintProblem::UnlockedSharedTask {
                task: "A".into(),
                pipelines: vec!["P1".into(), "P2".into()],
            },
            LintProblem::LockDurationConflict {
                lock_name: "shared".into(),
                tasks: vec![
                    ("L1".into(), Duration::from_secs(60)),
                    ("L2".into(), Duration::from_secs(120)),
                ],
            },
            LintProblem::SharedOutputWithoutLock {
                output: "warehouse.orders".into(),
                tasks: ("B".into(), "C".into()),
            },
        ]
    );
}

/// An unknown pipeline names the known ones.
async fn unknown_pipeline(catalog: &Catalog) {
    catalog.load(&spec(SEED)).await.unwrap();
    match catalog.pipeline("DAG9").await {
        Err(DagError::UnknownPipeline { name, known }) => {
            assert_eq!(name, "DAG9");
            assert_eq!(known, "DAG1, DAG2");
        }
        other => panic!("expected UnknownPipeline, got {other:?}"),
    }
    let (pipeline, tasks) = catalog.pipeline("DAG2").await.unwrap();
    assert_eq!(pipeline.tasks, ["NodeD", "NodeB", "NodeE"]);
    assert_eq!(tasks.len(), 3);
}

mod sqlite {
    use super::*;

    async fn fresh() -> (tempfile::TempDir, Catalog, Raw) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("catalog.db").display());
        let catalog = Catalog::open(&url).await.unwrap();
        let raw = Raw::Sqlite(sqlx::SqlitePool::connect(&url).await.unwrap());
        (dir, catalog, raw)
    }

    #[tokio::test]
    async fn load_is_idempotent_and_a_change_replaces() {
        let (_dir, catalog, raw) = fresh().await;
        super::load_is_idempotent_and_a_change_replaces(&catalog, &raw).await;
    }

    #[tokio::test]
    async fn shared_and_lint() {
        let (_dir, catalog, _) = fresh().await;
        super::shared_and_lint(&catalog).await;
    }

    #[tokio::test]
    async fn unknown_pipeline() {
        let (_dir, catalog, _) = fresh().await;
        super::unknown_pipeline(&catalog).await;
    }

    #[tokio::test]
    async fn a_lock_table_parameter_is_refused() {
        let err = Catalog::open("sqlite::memory:?table=locks")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("table"), "{err}");
    }
}

mod postgres {
    use super::*;

    /// A fresh schema on the private server, so tests do not share tables.
    async fn fresh() -> (Catalog, Raw) {
        let server = lockkit_tests::postgres::server().url();
        let schema = format!("dag_{}", lockkit_tests::server::random_suffix());
        let admin = sqlx::PgPool::connect(server).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        let sep = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{sep}options=-c%20search_path%3D{schema}");
        let catalog = Catalog::open(&url).await.unwrap();
        let raw = Raw::Postgres(sqlx::PgPool::connect(&url).await.unwrap());
        (catalog, raw)
    }

    #[tokio::test]
    async fn load_is_idempotent_and_a_change_replaces() {
        let (catalog, raw) = fresh().await;
        super::load_is_idempotent_and_a_change_replaces(&catalog, &raw).await;
    }

    #[tokio::test]
    async fn shared_and_lint() {
        let (catalog, _) = fresh().await;
        super::shared_and_lint(&catalog).await;
    }

    #[tokio::test]
    async fn unknown_pipeline() {
        let (catalog, _) = fresh().await;
        super::unknown_pipeline(&catalog).await;
    }

    #[tokio::test]
    async fn an_unreachable_server_is_transient_and_redacted() {
        let err = Catalog::open("postgres://etl:hunter2@127.0.0.1:1/ops")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        match err {
            DagError::Catalog(inner) => assert!(inner.is_retryable(), "{inner:?}"),
            other => panic!("expected a catalog error, got {other:?}"),
        }
    }
}

/// The README shows the very queries the commands run.
#[test]
fn the_readme_shows_the_queries_the_commands_run() {
    let readme = include_str!("../../README.md");
    for query in [
        lockkit_dag::catalog::SHARED_TASKS,
        lockkit_dag::catalog::LOCK_DURATION_CONFLICTS,
        lockkit_dag::catalog::SHARED_OUTPUTS,
    ] {
        assert!(readme.contains(query), "README.md lacks:\n{query}");
    }
}
