//! Spec files: the YAML a team writes, parsed and validated into a [`Spec`].
//!
//! ```yaml
//! tasks:
//!   - name: NodeB
//!     type: task
//!     input: input_path/XXX.csv
//!     output: output_path/table_name
//!     notebook: notebook_path          # or: command: "./load.sh"
//!     lock: {lock_status: enable, lock_duration: 10 mins}
//! pipelines:
//!   - name: DAG1
//!     flow: Start -> NodeA -> NodeB -> NodeC -> End
//!   - name: DAG3                       # or explicit dependencies per node
//!     nodes:
//!       - {task: NodeA}
//!       - {task: NodeB, depends_on: [NodeA]}
//! ```
//!
//! A task's `lock` takes `lock_status` (`enable`/`disable`, or a YAML
//! boolean), `lock_duration` (the lease TTL, a human duration: `10 mins`,
//! `90s`, `1h 30m`), and optionally `lock_name` (to share one lock between
//! differently named tasks; default: the task's name), `policy` (what to do
//! when the lock is held: `wait`, the default, `skip` or `fail`) and
//! `wait_timeout` (how long `wait` waits; default: without limit), and
//! `permits` (make the lock a semaphore: at most this many tasks hold it
//! at once, e.g. `permits: 2` for "at most two loads into the warehouse";
//! default 1; every task sharing a `lock_name` must give the same count).
//!
//! `flow` is a chain `A -> B -> C`, or a list of chains for branching
//! graphs. `Start` and `End` are the pipeline's two ends: when a flow names
//! them, every task must lie on a path from `Start` to `End`; when it names
//! neither (and with `nodes`), tasks without dependencies follow `Start`
//! and tasks without dependants precede `End`.
//!
//! Validation collects every problem, each with its file, line, and the
//! task or pipeline it is in; an invalid spec is never loaded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::error::{DagError, Result, SpecProblem, SpecProblems};
use crate::graph;

/// The name of every pipeline's entry node.
pub const START: &str = "Start";
/// The name of every pipeline's exit node.
pub const END: &str = "End";

/// A validated set of tasks and pipelines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spec {
    /// The tasks, by name.
    pub tasks: BTreeMap<String, Task>,
    /// The pipelines, by name.
    pub pipelines: BTreeMap<String, Pipeline>,
}

/// One task: what it runs, what it reads and writes, and its lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The task's name, unique in the spec.
    pub name: String,
    /// What it runs.
    pub action: Action,
    /// Its declared input (informational; passed as `LOCKKIT_TASK_INPUT`).
    pub input: Option<String>,
    /// Its declared output (informational; passed as `LOCKKIT_TASK_OUTPUT`).
    pub output: Option<String>,
    /// Its lock, when `lock_status` is enabled.
    pub lock: Option<TaskLock>,
}

/// What a task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A shell command (`sh -c`).
    Command(String),
    /// A notebook, run through the runner's notebook command template.
    Notebook(String),
}

/// A task's lock settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLock {
    /// The lock's name: `lock_name`, else the task's name.
    pub name: String,
    /// The lease TTL (`lock_duration`); the lease is renewed at a third of
    /// it while the task runs.
    pub ttl: Duration,
    /// What the task does when the lock is held.
    pub policy: LockPolicy,
    /// For [`LockPolicy::Wait`]: how long to wait; `None` waits without limit.
    pub wait_timeout: Option<Duration>,
    /// How many tasks hold the lock at once (`permits`): 1 is a lock, N a
    /// semaphore.
    pub permits: u32,
}

/// What a locked task does when its lock is held by someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockPolicy {
    /// Wait for the lock (up to `wait_timeout`), then run. The default.
    Wait,
    /// Do not run; the task (and its dependants) count as skipped.
    Skip,
    /// Do not run; the task fails.
    Fail,
}

impl LockPolicy {
    /// `wait`, `skip` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wait => "wait",
            Self::Skip => "skip",
            Self::Fail => "fail",
        }
    }

    /// The policy named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "wait" => Some(Self::Wait),
            "skip" => Some(Self::Skip),
            "fail" => Some(Self::Fail),
            _ => None,
        }
    }
}

/// A pipeline: its tasks in dependency order and the edges between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    /// The pipeline's name, unique in the spec.
    pub name: String,
    /// Its tasks in dependency order (a task comes after everything it
    /// depends on; ties keep the order of the spec).
    pub tasks: Vec<String>,
    /// `(from, to)`: `to` runs after `from`, sorted. `Start` and `End` are
    /// not stored; a task without dependencies follows `Start`.
    pub edges: Vec<(String, String)>,
}

impl Pipeline {
    /// The tasks `task` depends on, sorted by name.
    pub fn dependencies<'a>(&'a self, task: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.edges
            .iter()
            .filter(move |(_, to)| to == task)
            .map(|(from, _)| from.as_str())
    }
}

impl Spec {
    /// Reads and validates the spec files at `paths` as one spec (a
    /// directory stands for its `*.yaml` and `*.yml` files, in name order).
    ///
    /// # Errors
    /// [`DagError::Read`] for a file that cannot be read,
    /// [`DagError::InvalidSpec`] with every problem found.
    pub fn from_paths(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        for path in paths {
            if path.is_dir() {
                let entries = std::fs::read_dir(path).map_err(|source| DagError::Read {
                    path: path.clone(),
                    source,
                })?;
                let mut found: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|ext| ext == "yaml" || ext == "yml")
                    })
                    .collect();
                found.sort();
                if found.is_empty() {
                    return Err(DagError::spec(SpecProblem {
                        file: path.clone(),
                        line: None,
                        context: String::new(),
                        reason: "the directory has no .yaml or .yml files".to_owned(),
                    }));
                }
                files.extend(found);
            } else {
                files.push(path.clone());
            }
        }
        let mut texts = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| DagError::Read {
                path: file.clone(),
                source,
            })?;
            texts.push((file, text));
        }
        Self::from_texts(texts.iter().map(|(f, t)| (f.as_path(), t.as_str())))
    }

    /// Parses and validates one spec from `(file, text)` pairs (`file`
    /// only names the text in messages).
    ///
    /// # Errors
    /// [`DagError::InvalidSpec`] with every problem found; a spec with no
    /// tasks and no pipelines is refused (loading it would empty the
    /// catalog).
    ///
    /// # Example
    /// ```
    /// use std::path::Path;
    /// let yaml = "
    /// tasks:
    ///   - {name: A, command: 'true'}
    ///   - {name: B, command: 'true', lock: {lock_status: enable, lock_duration: 10 mins}}
    /// pipelines:
    ///   - {name: P, flow: Start -> A -> B -> End}
    /// ";
    /// let spec = lockkit_dag::Spec::from_texts([(Path::new("p.yaml"), yaml)])?;
    /// let b = &spec.tasks["B"];
    /// assert_eq!(b.lock.as_ref().unwrap().ttl.as_secs(), 600);
    /// assert_eq!(spec.pipelines["P"].tasks, ["A", "B"]);
    /// # Ok::<(), lockkit_dag::DagError>(())
    /// ```
    pub fn from_texts<'a>(texts: impl IntoIterator<Item = (&'a Path, &'a str)>) -> Result<Self> {
        let mut problems = Problems::default();
        let mut raw_files = Vec::new();
        for (file, text) in texts {
            match serde_saphyr::from_str::<Option<RawSpec>>(text) {
                Ok(raw) => raw_files.push((file.to_path_buf(), raw.unwrap_or_default())),
                Err(err) => problems.push(SpecProblem {
                    file: file.to_path_buf(),
                    line: err.location().map(|l| l.line()),
                    context: String::new(),
                    reason: one_line(&err.without_snippet().to_string()),
                }),
            }
        }
        if !problems.0.is_empty() {
            return Err(DagError::InvalidSpec(SpecProblems(problems.0)));
        }
        let spec = validate(&raw_files, &mut problems);
        if problems.0.is_empty() && spec.tasks.is_empty() && spec.pipelines.is_empty() {
            // Loading it would empty the catalog: almost surely a mistake.
            problems.push(SpecProblem {
                file: raw_files
                    .first()
                    .map(|(f, _)| f.clone())
                    .unwrap_or_default(),
                line: None,
                context: String::new(),
                reason: "the spec defines no tasks and no pipelines".to_owned(),
            });
        }
        if problems.0.is_empty() {
            Ok(spec)
        } else {
            Err(DagError::InvalidSpec(SpecProblems(problems.0)))
        }
    }

    /// The pipelines that use `task`, by name.
    pub fn pipelines_using<'a>(&'a self, task: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pipelines
            .values()
            .filter(move |p| p.tasks.iter().any(|t| t == task))
            .map(|p| p.name.as_str())
    }
}

/// The parser's message on one line, without its location (which the
/// problem carries).
fn one_line(message: &str) -> String {
    let mut text = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(at) = text.find(" at line ") {
        text.truncate(at);
    }
    text
}

#[derive(Default)]
struct Problems(Vec<SpecProblem>);

impl Problems {
    fn push(&mut self, problem: SpecProblem) {
        self.0.push(problem);
    }

    fn at(
        &mut self,
        file: &Path,
        line: u64,
        context: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.push(SpecProblem {
            file: file.to_path_buf(),
            line: (line > 0).then_some(line),
            context: context.into(),
            reason: reason.into(),
        });
    }
}

// ---- The YAML as written -------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    tasks: Vec<Spanned<RawTask>>,
    #[serde(default)]
    pipelines: Vec<Spanned<RawPipeline>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: Spanned<String>,
    #[serde(rename = "type", default)]
    kind: Option<Spanned<String>>,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    output: Option<String>,
    #[serde(default)]
    notebook: Option<String>,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    lock: Option<Spanned<RawLock>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    lock_status: Spanned<Scalar>,
    #[serde(default)]
    lock_duration: Option<Spanned<Scalar>>,
    #[serde(default)]
    lock_name: Option<Spanned<String>>,
    #[serde(default)]
    policy: Option<Spanned<String>>,
    #[serde(default)]
    wait_timeout: Option<Spanned<Scalar>>,
    #[serde(default)]
    permits: Option<Spanned<Scalar>>,
}

/// A scalar written as a string, a boolean or a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Int(i64),
    Text(String),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Self::Bool(b) => b.to_string(),
            Self::Int(i) => i.to_string(),
            Self::Text(t) => t.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    name: Spanned<String>,
    #[serde(default)]
    flow: Option<Spanned<Flow>>,
    #[serde(default)]
    nodes: Option<Vec<Spanned<RawNode>>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Flow {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    task: Spanned<String>,
    #[serde(default)]
    depends_on: Vec<String>,
}

// ---- Validation ------------------------------------------------------------

fn validate(files: &[(PathBuf, RawSpec)], problems: &mut Problems) -> Spec {
    let mut spec = Spec::default();
    // Where each name was first defined, for duplicate messages.
    let mut task_defined: HashMap<String, (PathBuf, u64)> = HashMap::new();
    // The permit count of each lock name, with the task that gave it first:
    // tasks sharing a lock must agree (at run time they would fail with
    // `PermitsMismatch` while the other holds it).
    let mut lock_counts: HashMap<String, (u32, String, PathBuf, u64)> = HashMap::new();
    for (file, raw) in files {
        for task in &raw.tasks {
            let name = task.value.name.value.trim().to_owned();
            let line = task.value.name.referenced.line();
            let context = format!("task {name}");
            if let Some(reason) = name_problem(&name) {
                problems.at(file, line, "task", reason);
                continue;
            }
            if let Some((first_file, first_line)) = task_defined.get(&name) {
                problems.at(
                    file,
                    line,
                    &context,
                    format!(
                        "duplicate task name (first defined at {}:{first_line})",
                        first_file.display()
                    ),
                );
                continue;
            }
            task_defined.insert(name.clone(), (file.clone(), line));
            if let Some(parsed) = validate_task(file, &name, &task.value, problems) {
                if let Some(lock) = &parsed.lock {
                    match lock_counts.get(&lock.name) {
                        Some((permits, first, first_file, first_line))
                            if *permits != lock.permits =>
                        {
                            problems.at(
                                file,
                                line,
                                &context,
                                format!(
                                    "lock {:?} has permits {} here but {permits} in task {first} \
                                     ({}:{first_line}); tasks sharing a lock must give the same permits",
                                    lock.name,
                                    lock.permits,
                                    first_file.display()
                                ),
                            );
                            continue;
                        }
                        Some(_) => {}
                        None => {
                            lock_counts.insert(
                                lock.name.clone(),
                                (lock.permits, name.clone(), file.clone(), line),
                            );
                        }
                    }
                }
                spec.tasks.insert(name, parsed);
            }
        }
    }
    let mut pipeline_defined: HashMap<String, (PathBuf, u64)> = HashMap::new();
    for (file, raw) in files {
        for pipeline in &raw.pipelines {
            let name = pipeline.value.name.value.trim().to_owned();
            let line = pipeline.value.name.referenced.line();
            if let Some(reason) = name_problem(&name) {
                problems.at(file, line, "pipeline", reason);
                continue;
            }
            let context = format!("pipeline {name}");
            if let Some((first_file, first_line)) = pipeline_defined.get(&name) {
                problems.at(
                    file,
                    line,
                    &context,
                    format!(
                        "duplicate pipeline name (first defined at {}:{first_line})",
                        first_file.display()
                    ),
                );
                continue;
            }
            pipeline_defined.insert(name.clone(), (file.clone(), line));
            let before = problems.0.len();
            let parsed = validate_pipeline(file, &name, &pipeline.value, &task_defined, problems);
            if let Some(parsed) = parsed.filter(|_| problems.0.len() == before) {
                spec.pipelines.insert(name, parsed);
            }
        }
    }
    spec
}

/// Why `name` cannot name a task or a pipeline, if it cannot.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the name is empty".to_owned());
    }
    if name == START || name == END {
        return Some(format!(
            "{name:?} is reserved for the ends of a pipeline's flow"
        ));
    }
    if name.contains("->") {
        return Some(format!("{name:?}: a name cannot contain \"->\""));
    }
    if name.chars().any(char::is_control) {
        return Some(format!(
            "{name:?}: a name cannot contain control characters"
        ));
    }
    None
}

fn validate_task(file: &Path, name: &str, raw: &RawTask, problems: &mut Problems) -> Option<Task> {
    let context = format!("task {name}");
    let line = raw.name.referenced.line();
    let before = problems.0.len();
    if let Some(kind) = &raw.kind
        && kind.value != "task"
    {
        problems.at(
            file,
            kind.referenced.line(),
            &context,
            format!("unknown type {:?} (the only type is \"task\")", kind.value),
        );
    }
    let action = match (&raw.command, &raw.notebook) {
        (Some(command), None) if !command.trim().is_empty() => {
            Some(Action::Command(command.clone()))
        }
        (None, Some(notebook)) if !notebook.trim().is_empty() => {
            Some(Action::Notebook(notebook.clone()))
        }
        (Some(_), Some(_)) => {
            problems.at(
                file,
                line,
                &context,
                "give either `command` or `notebook`, not both",
            );
            None
        }
        _ => {
            problems.at(
                file,
                line,
                &context,
                "nothing to run: give `command` or `notebook`",
            );
            None
        }
    };
    let lock = raw
        .lock
        .as_ref()
        .and_then(|lock| validate_lock(file, name, lock, problems));
    if problems.0.len() > before {
        return None;
    }
    Some(Task {
        name: name.to_owned(),
        action: action?,
        input: raw.input.clone(),
        output: raw.output.clone(),
        lock,
    })
}

fn validate_lock(
    file: &Path,
    task: &str,
    raw: &Spanned<RawLock>,
    problems: &mut Problems,
) -> Option<TaskLock> {
    let context = format!("task {task}");
    let lock = &raw.value;
    let status_line = lock.lock_status.referenced.line();
    let enabled = match lock.lock_status.value.text().to_ascii_lowercase().as_str() {
        "enable" | "enabled" | "true" | "on" | "yes" => true,
        "disable" | "disabled" | "false" | "off" | "no" => false,
        other => {
            problems.at(
                file,
                status_line,
                &context,
                format!("lock_status {other:?}: expected enable or disable"),
            );
            return None;
        }
    };
    let duration = |field: &str, value: &Spanned<Scalar>, problems: &mut Problems| {
        let text = value.value.text();
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(why) => {
                problems.at(
                    file,
                    value.referenced.line(),
                    &context,
                    format!("{field} {text:?}: {why}"),
                );
                None
            }
        }
    };
    let ttl = match &lock.lock_duration {
        Some(value) => duration("lock_duration", value, problems),
        None if enabled => {
            problems.at(
                file,
                status_line,
                &context,
                "the lock is enabled but has no lock_duration (the lease TTL, e.g. `lock_duration: 10 mins`)",
            );
            None
        }
        None => None,
    };
    let wait_timeout = lock
        .wait_timeout
        .as_ref()
        .and_then(|value| duration("wait_timeout", value, problems));
    let policy = match &lock.policy {
        None => LockPolicy::Wait,
        Some(p) => match LockPolicy::parse(p.value.trim()) {
            Some(policy) => policy,
            None => {
                problems.at(
                    file,
                    p.referenced.line(),
                    &context,
                    format!("policy {:?}: expected wait, skip or fail", p.value),
                );
                return None;
            }
        },
    };
    if lock.wait_timeout.is_some() && policy != LockPolicy::Wait {
        problems.at(
            file,
            status_line,
            &context,
            format!(
                "wait_timeout applies to the wait policy, not {}",
                policy.as_str()
            ),
        );
    }
    let name = match &lock.lock_name {
        Some(n) => {
            let name = n.value.trim().to_owned();
            if let Err(err) = lockkit_core::LockName::new(name.clone()) {
                problems.at(
                    file,
                    n.referenced.line(),
                    &context,
                    format!("lock_name: {err}"),
                );
                return None;
            }
            name
        }
        None => {
            if let Err(err) = lockkit_core::LockName::new(task.to_owned()) {
                problems.at(
                    file,
                    status_line,
                    &context,
                    format!("the task's name cannot name its lock ({err}); give lock_name"),
                );
                return None;
            }
            task.to_owned()
        }
    };
    let permits = match &lock.permits {
        None => 1,
        Some(p) => {
            let text = p.value.text();
            match text
                .trim()
                .parse::<u32>()
                .map_err(|e| lockkit_core::Error::invalid_input(e.to_string()))
                .and_then(lockkit_core::validate_permits)
            {
                Ok(n) => n,
                Err(err) => {
                    problems.at(
                        file,
                        p.referenced.line(),
                        &context,
                        format!("permits {text:?}: {err}"),
                    );
                    return None;
                }
            }
        }
    };
    if !enabled {
        return None;
    }
    let ttl = ttl?;
    if let Err(err) = lockkit_core::LockOptions::new().ttl(ttl).validate() {
        problems.at(file, status_line, &context, format!("lock_duration: {err}"));
        return None;
    }
    Some(TaskLock {
        name,
        ttl,
        policy,
        wait_timeout,
        permits,
    })
}

/// A human duration: `10 mins`, `90s`, `1h 30m`, `250ms` (`humantime`,
/// which also takes `10 minutes`; a bare number is refused: say the unit).
///
/// # Errors
/// A message saying why the text is not a duration.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    if text.chars().all(|c| c.is_ascii_digit()) {
        return Err("give a unit (examples: 10 mins, 90s, 1h 30m)".to_owned());
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("the duration is zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (examples: 10 mins, 90s, 1h 30m)")),
    }
}

fn validate_pipeline(
    file: &Path,
    name: &str,
    raw: &RawPipeline,
    tasks: &HashMap<String, (PathBuf, u64)>,
    problems: &mut Problems,
) -> Option<Pipeline> {
    let context = format!("pipeline {name}");
    let line = raw.name.referenced.line();
    let mut builder = graph::Builder::default();
    let mut explicit_ends = false;
    match (&raw.flow, &raw.nodes) {
        (Some(flow), None) => {
            let flow_line = flow.referenced.line();
            let chains: Vec<&str> = match &flow.value {
                Flow::One(chain) => vec![chain.as_str()],
                Flow::Many(chains) => chains.iter().map(String::as_str).collect(),
            };
            for chain in chains {
                let steps: Vec<&str> = chain.split("->").map(str::trim).collect();
                if steps.iter().any(|s| s.is_empty()) {
                    problems.at(
                        file,
                        flow_line,
                        &context,
                        format!("flow {chain:?} has an empty step (write `A -> B -> C`)"),
                    );
                    continue;
                }
                for step in &steps {
                    if *step == START || *step == END {
                        explicit_ends = true;
                    } else if !tasks.contains_key(*step) {
                        problems.at(file, flow_line, &context, format!("unknown task {step:?}"));
                    }
                    builder.node(step);
                }
                for pair in steps.windows(2) {
                    builder.edge(pair[0], pair[1]);
                }
            }
        }
        (None, Some(nodes)) => {
            for node in nodes {
                let task = node.value.task.value.trim();
                let node_line = node.value.task.referenced.line();
                if task == START || task == END {
                    problems.at(
                        file,
                        node_line,
                        &context,
                        format!("{task} is implicit with `nodes`; list only tasks"),
                    );
                    continue;
                }
                if !tasks.contains_key(task) {
                    problems.at(file, node_line, &context, format!("unknown task {task:?}"));
                }
                if !builder.node(task) {
                    problems.at(
                        file,
                        node_line,
                        &context,
                        format!("task {task:?} is listed twice"),
                    );
                }
            }
            for node in nodes {
                let task = node.value.task.value.trim();
                for dep in &node.value.depends_on {
                    let dep = dep.trim();
                    if !builder.contains(dep) {
                        problems.at(
                            file,
                            node.value.task.referenced.line(),
                            &context,
                            format!(
                                "{task} depends on {dep:?}, which is not a node of this pipeline"
                            ),
                        );
                        continue;
                    }
                    builder.edge(dep, task);
                }
            }
        }
        (Some(_), Some(_)) => {
            problems.at(
                file,
                line,
                &context,
                "give either `flow` or `nodes`, not both",
            );
            return None;
        }
        (None, None) => {
            problems.at(
                file,
                line,
                &context,
                "no `flow` and no `nodes`: the pipeline is empty",
            );
            return None;
        }
    }
    match builder.finish(explicit_ends) {
        Ok(pipeline) => Some(Pipeline {
            name: name.to_owned(),
            tasks: pipeline.tasks,
            edges: pipeline.edges,
        }),
        Err(reasons) => {
            for reason in reasons {
                problems.at(file, line, &context, reason);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(yaml: &str) -> Result<Spec> {
        Spec::from_texts([(Path::new("spec.yaml"), yaml)])
    }

    fn problems(yaml: &str) -> Vec<String> {
        match parse(yaml) {
            Err(DagError::InvalidSpec(p)) => p.0.iter().map(ToString::to_string).collect(),
            other => panic!("expected an invalid spec, got {other:?}"),
        }
    }

    const SEED: &str = "
tasks:
  - name: NodeA
    command: echo a
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
  - name: DAG1
    flow: Start -> NodeA -> NodeB -> NodeC -> End
  - name: DAG2
    flow: Start -> NodeD -> NodeB -> NodeE -> End
";

    #[test]
    fn the_seed_example_parses() {
        let spec = parse(SEED).unwrap();
        let b = &spec.tasks["NodeB"];
        assert_eq!(b.action, Action::Notebook("notebook_path".into()));
        assert_eq!(b.input.as_deref(), Some("input_path/XXX.csv"));
        assert_eq!(b.output.as_deref(), Some("output_path/table_name"));
        let lock = b.lock.as_ref().unwrap();
        assert_eq!(lock.name, "NodeB");
        assert_eq!(lock.ttl, Duration::from_secs(600));
        assert_eq!(lock.policy, LockPolicy::Wait);
        assert_eq!(lock.wait_timeout, None);
        assert!(spec.tasks["NodeA"].lock.is_none());
        let dag1 = &spec.pipelines["DAG1"];
        assert_eq!(dag1.tasks, ["NodeA", "NodeB", "NodeC"]);
        assert_eq!(
            dag1.edges,
            [
                ("NodeA".to_owned(), "NodeB".to_owned()),
                ("NodeB".to_owned(), "NodeC".to_owned())
            ]
        );
        assert_eq!(
            spec.pipelines_using("NodeB").collect::<Vec<_>>(),
            ["DAG1", "DAG2"]
        );
    }

    #[test]
    fn durations_are_human() {
        for (text, secs) in [
            ("10 mins", 600),
            ("90s", 90),
            ("1h 30m", 5400),
            ("2 minutes", 120),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn policies_lock_names_and_nodes_form() {
        let spec = parse(
            "
tasks:
  - {name: load_a, command: x, lock: {lock_status: enable, lock_duration: 90s, lock_name: warehouse, policy: skip}}
  - {name: load_b, command: x, lock: {lock_status: true, lock_duration: 90s, lock_name: warehouse, policy: wait, wait_timeout: 5m}}
  - {name: off, command: x, lock: {lock_status: disable}}
pipelines:
  - name: P
    nodes:
      - {task: load_a}
      - {task: off, depends_on: [load_a]}
      - {task: load_b, depends_on: [load_a, off]}
",
        )
        .unwrap();
        let a = spec.tasks["load_a"].lock.clone().unwrap();
        assert_eq!((a.name.as_str(), a.policy), ("warehouse", LockPolicy::Skip));
        let b = spec.tasks["load_b"].lock.clone().unwrap();
        assert_eq!(b.wait_timeout, Some(Duration::from_secs(300)));
        assert!(spec.tasks["off"].lock.is_none());
        assert_eq!(spec.pipelines["P"].tasks, ["load_a", "off", "load_b"]);
        assert_eq!(
            spec.pipelines["P"]
                .dependencies("load_b")
                .collect::<Vec<_>>(),
            ["load_a", "off"]
        );
    }

    #[test]
    fn a_lock_can_be_a_semaphore() {
        let spec = parse(
            "
tasks:
  - {name: load, command: x, lock: {lock_status: enable, lock_duration: 10 mins, permits: 2}}
  - {name: plain, command: x, lock: {lock_status: enable, lock_duration: 10 mins}}
pipelines:
  - {name: P, flow: Start -> load -> plain -> End}
",
        )
        .unwrap();
        assert_eq!(spec.tasks["load"].lock.as_ref().unwrap().permits, 2);
        assert_eq!(spec.tasks["plain"].lock.as_ref().unwrap().permits, 1);
        let found = problems(
            "
tasks:
  - {name: A, command: x, lock: {lock_status: enable, lock_duration: 1m, permits: 0}}
  - {name: B, command: x, lock: {lock_status: enable, lock_duration: 1m, permits: two}}
pipelines:
  - {name: P, flow: Start -> A -> B -> End}
",
        );
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with("spec.yaml:3: task A: permits \"0\""),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("spec.yaml:4: task B: permits \"two\""),
            "{found:#?}"
        );
    }

    #[test]
    fn tasks_sharing_a_lock_agree_on_its_permits() {
        let found = problems(
            "
tasks:
  - {name: A, command: x, lock: {lock_status: enable, lock_duration: 1m, lock_name: w, permits: 2}}
  - {name: B, command: x, lock: {lock_status: enable, lock_duration: 1m, lock_name: w, permits: 2}}
  - {name: C, command: x, lock: {lock_status: enable, lock_duration: 1m, lock_name: w}}
  - {name: w, command: x, lock: {lock_status: enable, lock_duration: 1m, permits: 3}}
pipelines:
  - {name: P, flow: Start -> A -> B -> C -> w -> End}
",
        );
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with(
                "spec.yaml:5: task C: lock \"w\" has permits 1 here but 2 in task A (spec.yaml:3)"
            ),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("spec.yaml:6: task w: lock \"w\" has permits 3 here but 2"),
            "{found:#?}"
        );
    }

    #[test]
    fn every_validation_error_names_file_line_and_reason() {
        let found = problems(
            "
tasks:
  - {name: A, command: x}
  - {name: A, command: y}
  - {name: B, command: x, lock: {lock_status: enable}}
  - {name: C, command: x, lock: {lock_status: enable, lock_duration: ten minutes}}
  - {name: D, command: x, lock: {lock_status: maybe, lock_duration: 1m}}
  - {name: E}
pipelines:
  - name: P1
    flow: Start -> A -> Nope -> End
  - name: P2
    flow: Start -> A -> End
  - name: P2
    flow: Start -> A -> End
",
        );
        let expect = [
            "spec.yaml:4: task A: duplicate task name (first defined at spec.yaml:3)",
            "spec.yaml:5: task B: the lock is enabled but has no lock_duration",
            "spec.yaml:6: task C: lock_duration \"ten minutes\"",
            "spec.yaml:7: task D: lock_status \"maybe\": expected enable or disable",
            "spec.yaml:8: task E: nothing to run",
            "spec.yaml:11: pipeline P1: unknown task \"Nope\"",
            "spec.yaml:14: pipeline P2: duplicate pipeline name (first defined at spec.yaml:12)",
        ];
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        for (got, want) in found.iter().zip(expect) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn a_cycle_is_named() {
        let found = problems(
            "
tasks:
  - {name: A, command: x}
  - {name: B, command: x}
  - {name: C, command: x}
pipelines:
  - name: loop
    flow: [Start -> A -> B -> C -> End, C -> A]
",
        );
        assert_eq!(
            found,
            ["spec.yaml:7: pipeline loop: cycle A -> B -> C -> A"]
        );
        let found = problems(
            "
tasks:
  - {name: A, command: x}
pipelines:
  - {name: self, nodes: [{task: A, depends_on: [A]}]}
",
        );
        assert_eq!(found, ["spec.yaml:5: pipeline self: cycle A -> A"]);
    }

    #[test]
    fn a_pipeline_needs_a_path_from_start_to_end() {
        let found = problems(
            "
tasks:
  - {name: A, command: x}
  - {name: B, command: x}
pipelines:
  - {name: cut, flow: [Start -> A, B -> End]}
  - {name: tail, flow: Start -> A}
  - {name: stray, flow: [Start -> A -> End, B]}
",
        );
        assert_eq!(
            found,
            [
                "spec.yaml:6: pipeline cut: no path from Start to End",
                "spec.yaml:7: pipeline tail: no path from Start to End",
                "spec.yaml:8: pipeline stray: task B is not on a path from Start to End",
            ]
        );
    }

    #[test]
    fn yaml_errors_carry_their_line() {
        let found = problems("tasks:\n  - name: A\n    comand: x\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("spec.yaml:3: "), "{found:?}");
        assert!(found[0].contains("comand"), "{found:?}");
        let found = problems("tasks: [\n");
        assert!(found[0].starts_with("spec.yaml:"), "{found:?}");
    }

    #[test]
    fn an_empty_spec_is_refused() {
        assert_eq!(
            problems(""),
            ["spec.yaml: the spec defines no tasks and no pipelines"]
        );
        assert_eq!(
            problems("tasks: []\n"),
            ["spec.yaml: the spec defines no tasks and no pipelines"]
        );
    }
}
