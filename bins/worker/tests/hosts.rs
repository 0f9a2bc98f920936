//! Folio on many hosts: the real `api` and `worker` binaries as separate network hosts
//! (`scripts/hosts.sh`: Linux network namespaces on one bridge), sharing one Postgres and
//! one S3 server on a database host of their own.
//!
//! - A worker host's cable is pulled while it reads a book: another host takes the job over
//!   after `stale_after`; when the cable is back, the cut-off worker's writes are refused by
//!   fencing and it stops its handler; the book completes once, every page's stored text
//!   matches the manifest.
//! - An `api` host is cut off while clients use both: they carry on through the other one.
//! - A soak: 20 books of 24 pages through both api hosts, OCR then guidelines then finalize,
//!   workers restarted one at a time on the way; the database's growth per job is measured.
//!
//! The test's own client runs on the `client` host: its thread joins that host's network
//! namespace, so every connection it makes crosses the bridge. The figures of each test are
//! printed as one JSON line. Needs root (namespaces), `ip`, Postgres' server binaries,
//! tesseract and moto's server (`FOLIO_MOTO_SERVER`); a missing one fails the test.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::future::Future;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blob_store::conformance::moto;
use blob_store::{S3BlobStore, S3Config};
use books::{BookId, Books, OcrStatus, layout};
use jobs_core::testing::eventually_with;
use jobs_core::{Job, JobId, JobStatus, JobStore};
use ocr::testing::{
    FixturePage, character_error_rate, fixture_pages, fixture_uploads, require_tesseract,
};
use serde_json::{Value, json};
use support::{
    Process, api_binary, checkpointed_pages, counting_tesseract, logs, path_with, recognitions,
    round, total, worker_binary,
};

mod support;

const API_TOKEN: &str = "hosts-test-token";
const HEARTBEAT_INTERVAL: &str = "1s";
/// Short, so a takeover is quick; the cut lasts longer than this.
const STALE_AFTER: &str = "6s";
const STALE_AFTER_S: f64 = 6.0;

/// The tests share the machine's two cores: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn hosts_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/hosts.sh")
}

/// One run of `scripts/hosts.sh`: its hosts exist until it is dropped (also on a panic).
struct Hosts {
    name: String,
    vars: HashMap<String, String>,
}

impl Hosts {
    fn up(prefix: &str) -> Self {
        let name = format!("{prefix}{}", std::process::id() % 100_000);
        let output = Command::new("bash")
            .arg(hosts_script())
            .args(["up", &name])
            .env("FOLIO_MOTO_SERVER", moto::find_moto_server())
            .env("FOLIO_HOSTS_OWNER", std::process::id().to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/hosts.sh");
        assert!(
            output.status.success(),
            "scripts/hosts.sh up failed ({}); it needs root, iproute2 and Postgres' server \
             binaries",
            output.status
        );
        let vars = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        Self { name, vars }
    }

    fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("hosts.sh printed no {key}"))
    }

    fn addr(&self, host: &str) -> &str {
        self.var(&format!("ADDR_{host}"))
    }

    fn database_url(&self) -> &str {
        self.var("DATABASE_URL")
    }

    fn s3_endpoint(&self) -> &str {
        self.var("S3_ENDPOINT")
    }

    fn script(&self, args: &[&str]) {
        let status = Command::new("bash")
            .arg(hosts_script())
            .args(args)
            .status()
            .expect("run scripts/hosts.sh");
        assert!(status.success(), "hosts.sh {args:?}: {status}");
    }

    /// Pulls `host`'s cable: its packets are dropped, silently, as on a dead link.
    fn cut(&self, host: &str) {
        self.script(&["cut", &self.name, host]);
    }

    fn heal(&self, host: &str) {
        self.script(&["heal", &self.name, host]);
    }

    /// `program` to run on `host`.
    fn command(&self, host: &str, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.var(&format!("NS_{host}"))])
            .arg(program);
        command
    }

    /// Moves the calling thread onto the client host: the connections it opens from now on
    /// cross the bridge (child processes it starts inherit it: start them with
    /// [`Hosts::command`]).
    fn enter_client(&self) {
        let path = format!("/var/run/netns/{}", self.var("NS_client"));
        let namespace = fs::File::open(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
        rustix::thread::move_into_link_name_space(
            namespace.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("join the client host's network namespace");
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(hosts_script())
            .args(["down", &self.name])
            .status();
    }
}

/// Latencies of the client's API requests.
#[derive(Default)]
struct Latencies(Mutex<Vec<Duration>>);

impl Latencies {
    fn record(&self, took: Duration) {
        self.0.lock().unwrap().push(took);
    }

    fn percentile(&self, fraction: f64) -> f64 {
        let mut all = self.0.lock().unwrap().clone();
        all.sort();
        if all.is_empty() {
            return 0.0;
        }
        let index = ((all.len() as f64 * fraction).ceil() as usize).clamp(1, all.len()) - 1;
        all[index].as_secs_f64() * 1000.0
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Everything on the hosts: the shared stores and the processes.
struct Deployment {
    hosts: Hosts,
    dir: tempfile::TempDir,
    storage_url: String,
    s3_env: Vec<(&'static str, String)>,
    api_binary: PathBuf,
    tesseract_dir: PathBuf,
    runs: PathBuf,
    books: Books,
    jobs: Arc<dyn JobStore>,
    pool: sqlx::PgPool,
    http: reqwest::Client,
}

impl Deployment {
    /// The stores on `hosts`, from the client host (the calling thread must be on it).
    async fn start(hosts: Hosts, api_binary: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (tesseract_dir, runs) = counting_tesseract(dir.path());
        let credentials = moto::test_credentials();
        let s3_env = vec![
            ("AWS_ENDPOINT_URL", hosts.s3_endpoint().to_owned()),
            ("AWS_ACCESS_KEY_ID", credentials.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY",
                credentials.secret_access_key.clone(),
            ),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ];
        let store = S3BlobStore::from_env(
            S3Config::new("folio")
                .with_endpoint(hosts.s3_endpoint())
                .with_region("us-east-1")
                .with_credentials(credentials),
        )
        .await
        .unwrap();
        store
            .client()
            .create_bucket()
            .bucket("folio")
            .send()
            .await
            .unwrap();
        let jobs = jobs_postgres::PgJobStore::connect(hosts.database_url(), 4)
            .await
            .unwrap();
        let pool = jobs.pool().clone();
        Self {
            hosts,
            dir,
            storage_url: "s3://folio".to_owned(),
            s3_env,
            api_binary,
            tesseract_dir,
            runs,
            books: Books::new(Arc::new(store)),
            jobs: Arc::new(jobs),
            pool,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    fn api(&self, host: &str) -> Process {
        let mut command = self.hosts.command(host, &self.api_binary);
        command
            .args(["--listen", &format!("{}:8080", self.hosts.addr(host))])
            .args(["--database-url", self.hosts.database_url()])
            .args(["--storage", &self.storage_url])
            .args(["--api-token", API_TOKEN])
            .args(["--stale-after", STALE_AFTER])
            .env("FOLIO_LOG_FORMAT", "text")
            .envs(self.s3_env.iter().map(|(key, value)| (key, value)));
        Process::spawn(command, host, self.dir.path())
    }

    fn worker(&self, host: &str, types: &str) -> Process {
        let mut command = self.hosts.command(host, &worker_binary());
        command
            .args(["--database-url", self.hosts.database_url()])
            .args(["--storage", &self.storage_url])
            .args(["--types", types])
            .args(["--concurrency", "2", "--ocr-concurrency", "1"])
            .args(["--manifest-flush-every", "1"])
            .args(["--heartbeat-interval", HEARTBEAT_INTERVAL])
            .args(["--stale-after", STALE_AFTER])
            .args(["--progress-flush", "200ms", "--shutdown-grace", "10s"])
            .args(["--storage-wait", "30s"])
            .env("FOLIO_WORKER_ID", host)
            .env("FOLIO_LOG_FORMAT", "text")
            .env("PATH", path_with(&self.tesseract_dir))
            .envs(self.s3_env.iter().map(|(key, value)| (key, value)));
        Process::spawn(command, host, self.dir.path())
    }

    fn base(&self, host: &str) -> String {
        format!("http://{}:8080", self.hosts.addr(host))
    }

    /// A request to the api on `host`, timed; `None` when it did not answer.
    async fn call(
        &self,
        host: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<reqwest::Body>,
        content_type: Option<&str>,
        timeout: Duration,
    ) -> Option<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base(host)))
            .bearer_auth(API_TOKEN)
            .timeout(timeout);
        if let Some(body) = body {
            request = request.body(body);
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.ok()?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Some((status, value))
    }

    async fn get(&self, host: &str, path: &str) -> Option<(u16, Value)> {
        self.call(
            host,
            reqwest::Method::GET,
            path,
            None,
            None,
            Duration::from_secs(5),
        )
        .await
    }

    async fn post_json(&self, host: &str, path: &str, body: &Value) -> Option<(u16, Value)> {
        self.call(
            host,
            reqwest::Method::POST,
            path,
            Some(serde_json::to_vec(body).unwrap().into()),
            Some("application/json"),
            Duration::from_secs(20),
        )
        .await
    }

    /// Creates book `id` through `host` and uploads `pages` fixture pages with
    /// `?ocr=true&then=...`; once the upload's `ingest` job made the pages, returns the id
    /// of the `ocr` job its chain started.
    async fn upload(&self, host: &str, id: &str, pages: usize, then: &str) -> JobId {
        let (status, body) = self
            .post_json(host, "/v1/books", &json!({"id": id, "title": id}))
            .await
            .expect("the api answers");
        assert_eq!(status, 201, "{body}");
        let files: Vec<(String, Vec<u8>)> = fixture_uploads(pages)
            .into_iter()
            .map(|file| (file.name, file.bytes.to_vec()))
            .collect();
        let (content_type, body) = multipart(&files);
        let query = match then {
            "" => "?ocr=true".to_owned(),
            then => format!("?ocr=true&then={then}"),
        };
        let (status, answer) = self
            .call(
                host,
                reqwest::Method::POST,
                &format!("/v1/books/{id}/pages{query}"),
                Some(body.into()),
                Some(&content_type),
                Duration::from_secs(60),
            )
            .await
            .expect("the api answers the upload");
        assert_eq!(status, 202, "{answer}");
        let ingest = format!("/v1/jobs/{}", answer["job"]["id"].as_str().unwrap());
        let ocr = eventually_with(
            Duration::from_secs(120),
            "the upload's ingest to complete",
            String::new,
            || async {
                let (status, job) = self.get(host, &ingest).await?;
                let next = job["next_job_id"].as_str();
                (status == 200 && job["status"] == "completed").then_some(next?.to_owned())
            },
        )
        .await;
        ocr.parse().unwrap()
    }

    async fn ready(&self, host: &str, workers: usize) -> Option<()> {
        let (status, body) = self.get(host, "/readyz").await?;
        (status == 200 && body["live_workers"] == workers).then_some(())
    }

    /// Every page of `book` done, its stored text the fixture's (within OCR's error) and
    /// its manifest entry pointing at it. Returns the manifest's recorded tries.
    async fn check_pages(&self, book: &BookId, pages: usize) -> u32 {
        let manifest = self.books.manifest(book).await.unwrap();
        assert_eq!(manifest.pages.len(), pages, "{book}");
        let fixtures: Vec<FixturePage> = fixture_pages();
        let mut tries = 0;
        for (entry, page) in manifest.pages.iter().zip(fixtures.iter().cycle()) {
            assert_eq!(
                entry.ocr.status,
                OcrStatus::Done,
                "{book} page {}",
                entry.page
            );
            let path = layout::ocr_text_path(entry.page);
            assert_eq!(entry.ocr.text.as_deref(), Some(path.as_str()), "{book}");
            let key = layout::book_key(book, &path);
            let text = self.books.store().get(&key).await.unwrap();
            let text = String::from_utf8(text.bytes.to_vec()).unwrap();
            assert_eq!(
                entry.ocr.chars,
                Some(text.chars().count() as u64),
                "{book} page {}: the manifest's count is not the stored text's",
                entry.page
            );
            assert!(
                character_error_rate(&page.text, &text) < 0.03,
                "{book} page {}",
                entry.page
            );
            tries += entry.ocr.attempts;
        }
        tries
    }

    async fn job(&self, id: JobId) -> Option<Job> {
        self.jobs.get(id).await.ok()
    }
}

/// A multipart/form-data body with one `files` field per file.
fn multipart(files: &[(String, Vec<u8>)]) -> (String, Vec<u8>) {
    let boundary = "folio-hosts-boundary-5c2e";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n\
                 Content-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn a_worker_host_cut_off_mid_book_is_fenced_and_another_host_finishes_it() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    on_client_host("cut", |deployment| async move {
        require_tesseract().await;
        const PAGES: usize = 36;
        let api = deployment.api("api1");
        let workers: BTreeMap<&str, Process> = ["w1", "w2", "w3"]
            .into_iter()
            .map(|host| (host, deployment.worker(host, "ingest,ocr")))
            .collect();
        let everyone =
            |workers: &BTreeMap<&str, Process>| logs(&workers.values().collect::<Vec<_>>());
        eventually_with(
            Duration::from_secs(60),
            "the api ready with three live workers",
            || everyone(&workers),
            || deployment.ready("api1", 3),
        )
        .await;

        let book = BookId::parse("cut-off").unwrap();
        let job_id = deployment.upload("api1", book.as_str(), PAGES, "").await;
        let running = eventually_with(
            Duration::from_secs(120),
            "six pages durable",
            || everyone(&workers),
            || async {
                let job = deployment.job(job_id).await?;
                (job.status.is_terminal() || checkpointed_pages(&job) >= 6).then_some(job)
            },
        )
        .await;
        assert_eq!(running.status, JobStatus::Running, "{running:#?}");
        let victim = running.worker_id.clone().unwrap();
        let durable_at_cut = checkpointed_pages(&running);
        let recognized_at_cut = total(&recognitions(&deployment.runs));

        deployment.hosts.cut(&victim);
        let cut_at = Instant::now();
        let taken = eventually_with(
            Duration::from_secs(60),
            "another host to take the job over",
            || everyone(&workers),
            || async {
                let job = deployment.job(job_id).await?;
                (job.worker_id.as_deref() != Some(victim.as_str())
                    && job.status == JobStatus::Running)
                    .then_some(job)
            },
        )
        .await;
        let takeover_s = cut_at.elapsed().as_secs_f64();
        let new_owner = taken.worker_id.clone().unwrap();
        // Keep the cable out a while longer, as a real outage would.
        let heal_at = cut_at + Duration::from_secs_f64(STALE_AFTER_S * 2.0);
        tokio::time::sleep_until(heal_at.into()).await;
        deployment.hosts.heal(&victim);
        let healed = Instant::now();
        let victim_process = workers.get(victim.as_str()).unwrap();
        let fenced_after_s = eventually_with(
            Duration::from_secs(120),
            "the cut-off worker to hear that its lease is gone",
            || everyone(&workers),
            || async {
                victim_process
                    .log()
                    .contains("lease lost")
                    .then(|| healed.elapsed().as_secs_f64())
            },
        )
        .await;

        let done = eventually_with(
            Duration::from_secs(240),
            "the book's job to end",
            || everyone(&workers),
            || async {
                let job = deployment.job(job_id).await?;
                job.status.is_terminal().then_some(job)
            },
        )
        .await;
        assert_eq!(
            done.status,
            JobStatus::Completed,
            "{done:#?}\n{}",
            everyone(&workers)
        );
        let manifest_tries = deployment.check_pages(&book, PAGES).await;
        let counts = recognitions(&deployment.runs);
        let pages_redone = total(&counts) - PAGES;
        let fenced: Vec<String> = workers[victim.as_str()]
            .log()
            .lines()
            .filter(|line| line.contains("lease lost") || line.contains("refused"))
            .map(str::to_owned)
            .collect();
        // One ocr job (after the upload's completed ingest): completed by the new owner in
        // the second attempt, never by the victim.
        let all = deployment
            .jobs
            .list(&jobs_core::JobQuery::default())
            .await
            .unwrap();
        let kinds: Vec<(&str, JobStatus)> = all
            .iter()
            .map(|job| (job.job_type.as_str(), job.status))
            .collect();
        assert_eq!(
            kinds,
            [
                ("ocr", JobStatus::Completed),
                ("ingest", JobStatus::Completed)
            ],
            "{all:#?}"
        );
        assert_eq!(done.attempt, 2, "{done:#?}");
        assert_eq!(done.worker_id.as_deref(), Some(new_owner.as_str()));
        for process in workers.values() {
            process.assert_running();
        }
        api.assert_running();
        let figures = json!({
            "test": "hosts_worker_cut_off",
            "pages": PAGES,
            "victim": victim,
            "new_owner": new_owner,
            "durable_at_cut": durable_at_cut,
            "recognized_at_cut": recognized_at_cut,
            "takeover_s": round(takeover_s),
            "stale_after_s": STALE_AFTER_S,
            "cut_for_s": round((healed - cut_at).as_secs_f64()),
            "fenced_after_heal_s": round(fenced_after_s),
            "recognitions": counts,
            "pages_redone": pages_redone,
            "manifest_tries": manifest_tries,
            "attempt": done.attempt,
            "fenced_log": fenced,
        });
        eprintln!("{figures}");
        assert!(
            takeover_s < STALE_AFTER_S + 4.0,
            "takeover took {takeover_s:.1} s\n{figures}"
        );
        assert!(!fenced.is_empty(), "{figures}");
        // Logs to a file carry no terminal colours.
        assert!(
            !workers[victim.as_str()].log().contains('\u{1b}'),
            "ANSI escapes in a log file"
        );
        // No page counted twice: the cut-off worker's manifest writes, if any came after
        // the takeover, were refused by the manifest's fence.
        assert_eq!(manifest_tries as usize, PAGES, "{figures}");
    });
}

/// Starts the hosts, moves this thread onto the client host and runs `body` there, on a
/// runtime of this thread (so every connection the test opens starts on the client host).
fn on_client_host<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(Arc<Deployment>) -> Fut,
    Fut: Future<Output = ()>,
{
    let api_binary = api_binary();
    let hosts = Hosts::up(prefix);
    hosts.enter_client();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let deployment = Arc::new(Deployment::start(hosts, api_binary).await);
            body(deployment).await;
        });
}

/// A client that uses `hosts` in turn and moves on to the next when one does not answer.
struct Client<'a> {
    deployment: &'a Deployment,
    hosts: Vec<&'static str>,
    next: std::cell::Cell<usize>,
    failovers: std::cell::Cell<usize>,
}

impl<'a> Client<'a> {
    fn new(deployment: &'a Deployment, hosts: &[&'static str]) -> Self {
        Self {
            deployment,
            hosts: hosts.to_vec(),
            next: std::cell::Cell::new(0),
            failovers: std::cell::Cell::new(0),
        }
    }

    /// GET `path` from the next host that answers within 2 s.
    async fn get(&self, path: &str) -> (u16, Value) {
        for _ in 0..self.hosts.len() * 3 {
            let host = self.hosts[self.next.get() % self.hosts.len()];
            self.next.set(self.next.get() + 1);
            let answer = self
                .deployment
                .call(
                    host,
                    reqwest::Method::GET,
                    path,
                    None,
                    None,
                    Duration::from_secs(2),
                )
                .await;
            match answer {
                Some(answer) => return answer,
                None => self.failovers.set(self.failovers.get() + 1),
            }
        }
        panic!("no api host answered GET {path}");
    }
}

#[test]
fn an_api_host_cut_off_leaves_its_clients_on_the_other() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    on_client_host("api", |deployment| async move {
        require_tesseract().await;
        const PAGES: usize = 12;
        let apis = [deployment.api("api1"), deployment.api("api2")];
        let workers = [
            deployment.worker("w1", "ingest,ocr"),
            deployment.worker("w2", "ingest,ocr"),
        ];
        let context = || logs(&[&apis[0], &apis[1], &workers[0], &workers[1]]);
        for host in ["api1", "api2"] {
            eventually_with(
                Duration::from_secs(60),
                "both apis ready with two live workers",
                context,
                || deployment.ready(host, 2),
            )
            .await;
        }
        // A book through each api; then api1's cable goes.
        let first = deployment.upload("api1", "through-api1", PAGES, "").await;
        let second = deployment.upload("api2", "through-api2", PAGES, "").await;
        let client = Client::new(&deployment, &["api1", "api2"]);
        deployment.hosts.cut("api1");
        let cut_at = Instant::now();

        // The client carries on: it watches both jobs and starts a third book, all through
        // whichever api answers.
        let (status, _) = deployment
            .get("api1", "/healthz")
            .await
            .map_or((0, Value::Null), |a| a);
        assert_eq!(status, 0, "api1 answered while cut off");
        let third = deployment.upload("api2", "during-cut", PAGES, "").await;
        for id in [first, second, third] {
            eventually_with(
                Duration::from_secs(180),
                "the books' jobs to complete, watched through the api",
                context,
                || async {
                    let (status, job) = client.get(&format!("/v1/jobs/{id}")).await;
                    assert_eq!(status, 200, "{job}");
                    (job["status"] == "completed").then_some(())
                },
            )
            .await;
        }
        let failovers = client.failovers.get();
        let cut_for_s = cut_at.elapsed().as_secs_f64();
        deployment.hosts.heal("api1");
        eventually_with(Duration::from_secs(60), "api1 ready again", context, || {
            deployment.ready("api1", 2)
        })
        .await;
        // api1 serves the state the other one made while it was away.
        let (status, book) = deployment
            .get("api1", "/v1/books/during-cut")
            .await
            .unwrap();
        assert_eq!(status, 200, "{book}");
        let (_, through_api2) = deployment
            .get("api2", "/v1/books/during-cut")
            .await
            .unwrap();
        assert_eq!(book, through_api2);
        for id in ["through-api1", "through-api2", "during-cut"] {
            deployment
                .check_pages(&BookId::parse(id).unwrap(), PAGES)
                .await;
        }
        for process in apis.iter().chain(workers.iter()) {
            process.assert_running();
        }
        let figures = json!({
            "test": "hosts_api_cut_off",
            "books": 3,
            "pages": PAGES * 3,
            "cut_for_s": round(cut_for_s),
            "client_failovers": failovers,
        });
        eprintln!("{figures}");
        assert!(
            failovers > 0,
            "the client never met the cut-off api: {figures}"
        );
    });
}

/// The jobs table's counters and sizes, and the server's WAL position.
#[derive(Debug, Clone)]
struct TableStats {
    wal_lsn: String,
    live_tuples: i64,
    dead_tuples: i64,
    inserted: i64,
    updated: i64,
    hot_updated: i64,
    deleted: i64,
    autovacuums: i64,
    table_bytes: i64,
    index_bytes: i64,
    total_bytes: i64,
}

impl TableStats {
    fn to_json(&self) -> Value {
        json!({
            "live_tuples": self.live_tuples,
            "dead_tuples": self.dead_tuples,
            "deleted": self.deleted,
            "table_bytes": self.table_bytes,
            "index_bytes": self.index_bytes,
            "total_bytes": self.total_bytes,
        })
    }
}

async fn table_stats(pool: &sqlx::PgPool) -> TableStats {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT pg_current_wal_lsn()::text AS lsn, n_live_tup, n_dead_tup, n_tup_ins, n_tup_upd,
                n_tup_hot_upd, n_tup_del, autovacuum_count,
                pg_relation_size('folio_jobs') AS table_bytes,
                pg_indexes_size('folio_jobs') AS index_bytes,
                pg_total_relation_size('folio_jobs') AS total_bytes
         FROM pg_stat_user_tables WHERE relname = 'folio_jobs'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    TableStats {
        wal_lsn: row.get("lsn"),
        live_tuples: row.get("n_live_tup"),
        dead_tuples: row.get("n_dead_tup"),
        inserted: row.get("n_tup_ins"),
        updated: row.get("n_tup_upd"),
        hot_updated: row.get("n_tup_hot_upd"),
        deleted: row.get("n_tup_del"),
        autovacuums: row.get("autovacuum_count"),
        table_bytes: row.get("table_bytes"),
        index_bytes: row.get("index_bytes"),
        total_bytes: row.get("total_bytes"),
    }
}

async fn wal_bytes_between(pool: &sqlx::PgPool, from: &str, to: &str) -> i64 {
    sqlx::query_scalar("SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::bigint")
        .bind(to)
        .bind(from)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// How a worker is restarted during the soak.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Term,
    Kill,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Term => "SIGTERM",
            Stop::Kill => "SIGKILL",
        }
    }
}

#[test]
fn soak_twenty_books_through_two_apis_with_workers_restarted() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    on_client_host("soak", |deployment| async move {
        require_tesseract().await;
        const BOOKS: usize = 20;
        const PAGES: usize = 24;
        const TYPES: &str = "ingest,ocr,guidelines,finalize";
        let apis = [deployment.api("api1"), deployment.api("api2")];
        let mut workers: BTreeMap<&str, Process> = ["w1", "w2", "w3"]
            .into_iter()
            .map(|host| (host, deployment.worker(host, TYPES)))
            .collect();
        let context = |workers: &BTreeMap<&str, Process>| {
            logs(&workers.values().chain(apis.iter()).collect::<Vec<_>>())
        };
        for host in ["api1", "api2"] {
            eventually_with(
                Duration::from_secs(60),
                "both apis ready with three live workers",
                || context(&workers),
                || deployment.ready(host, 3),
            )
            .await;
        }
        let before = table_stats(&deployment.pool).await;
        let started = Instant::now();
        let latencies = Latencies::default();
        let finished = std::cell::Cell::new(false);
        let ids: Vec<String> = (0..BOOKS).map(|index| format!("soak-{index:02}")).collect();
        let uploaded = std::cell::Cell::new(0_usize);

        // Clients reading while the books run: a book's manifest and the job list, in turn
        // from each api, ten times a second.
        let readers = async {
            let mut round = 0_usize;
            while !finished.get() {
                round += 1;
                let host = ["api1", "api2"][round % 2];
                let path = match (round / 2) % 2 {
                    0 if uploaded.get() > 0 => {
                        format!("/v1/books/{}", ids[round % uploaded.get()])
                    }
                    _ => "/v1/jobs?limit=50".to_owned(),
                };
                let asked = Instant::now();
                let (status, body) = deployment
                    .call(
                        host,
                        reqwest::Method::GET,
                        &path,
                        None,
                        None,
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap_or_else(|| panic!("{host} did not answer GET {path}"));
                latencies.record(asked.elapsed());
                assert_eq!(status, 200, "GET {path}: {body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };

        let run = async {
            let mut upload_ms = Vec::new();
            for (index, id) in ids.iter().enumerate() {
                let host = ["api1", "api2"][index % 2];
                let asked = Instant::now();
                deployment
                    .upload(host, id, PAGES, "guidelines,finalize")
                    .await;
                upload_ms.push(asked.elapsed().as_millis() as u64);
                uploaded.set(index + 1);
            }
            // Workers restarted one at a time as the OCR goes on.
            let plan = [
                ("w1", Stop::Term, 0.25),
                ("w2", Stop::Kill, 0.5),
                ("w3", Stop::Term, 0.75),
            ];
            let mut restarts = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(1500);
            loop {
                let recognized = total(&recognitions(&deployment.runs));
                if let Some((host, how, _)) = plan
                    .get(restarts.len())
                    .filter(|(_, _, at)| recognized as f64 >= at * (BOOKS * PAGES) as f64)
                {
                    let process = workers.get_mut(host).unwrap();
                    process.assert_running();
                    let stopping = Instant::now();
                    match how {
                        Stop::Term => {
                            let status = process.terminate(Duration::from_secs(30)).await;
                            assert!(
                                status.success(),
                                "{host} exited with {status}\n{}",
                                process.log()
                            );
                        }
                        Stop::Kill => process.kill(),
                    }
                    let stopped_s = stopping.elapsed().as_secs_f64();
                    workers.insert(host, deployment.worker(host, TYPES));
                    restarts.push(json!({
                        "worker": host,
                        "how": how.name(),
                        "at_recognitions": recognized,
                        "stopped_in_s": round(stopped_s),
                    }));
                }
                let finalized = deployment
                    .jobs
                    .list(&jobs_core::JobQuery {
                        job_type: Some("finalize".to_owned()),
                        statuses: vec![JobStatus::Completed],
                        limit: 100,
                        ..jobs_core::JobQuery::default()
                    })
                    .await
                    .unwrap()
                    .len();
                if finalized == BOOKS {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{finalized} of {BOOKS} books finalized by the deadline\n{}",
                    context(&workers)
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            finished.set(true);
            (upload_ms, restarts)
        };
        let ((upload_ms, restarts), ()) = tokio::join!(run, readers);
        let soak_s = started.elapsed().as_secs_f64();

        // Every book finalized, every page done with its text stored, no job failed.
        let mut manifest_tries = 0;
        for id in &ids {
            let book = BookId::parse(id).unwrap();
            manifest_tries += deployment.check_pages(&book, PAGES).await;
            let (status, guidelines) = deployment
                .get("api1", &format!("/v1/books/{id}/guidelines"))
                .await
                .unwrap();
            assert_eq!(status, 200, "{id}: {guidelines}");
        }
        let jobs = deployment
            .jobs
            .list(&jobs_core::JobQuery {
                limit: 500,
                ..jobs_core::JobQuery::default()
            })
            .await
            .unwrap();
        let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
        for job in &jobs {
            *by_status
                .entry(format!("{}:{}", job.job_type, job.status))
                .or_default() += 1;
        }
        assert!(
            jobs.iter().all(|job| job.status == JobStatus::Completed),
            "{by_status:?}"
        );
        let requeued = jobs.iter().filter(|job| job.attempt > 1).count();
        // Statistics reach the server's views a moment after the writes.
        let after = eventually_with(
            Duration::from_secs(30),
            "the jobs table's statistics to count every job",
            String::new,
            || async {
                let stats = table_stats(&deployment.pool).await;
                (stats.inserted >= jobs.len() as i64).then_some(stats)
            },
        )
        .await;
        let wal = wal_bytes_between(&deployment.pool, &before.wal_lsn, &after.wal_lsn).await;
        let counts = recognitions(&deployment.runs);
        let per_job = |value: i64| round(value as f64 / jobs.len() as f64);
        let figures = json!({
            "test": "hosts_soak",
            "books": BOOKS,
            "pages_per_book": PAGES,
            "books_finalized": BOOKS,
            "jobs": jobs.len(),
            "jobs_by_type_and_status": by_status,
            "jobs_requeued": requeued,
            "pages": BOOKS * PAGES,
            "recognitions": total(&counts),
            "recognitions_by_worker": counts,
            "manifest_tries": manifest_tries,
            "restarts": restarts,
            "soak_s": round(soak_s),
            "upload_ms": upload_ms,
            "api_requests": latencies.count(),
            "api_p50_ms": round(latencies.percentile(0.50)),
            "api_p99_ms": round(latencies.percentile(0.99)),
            "api_max_ms": round(latencies.percentile(1.0)),
            "wal_bytes": wal,
            "wal_bytes_per_job": per_job(wal),
            "dead_tuples_after": after.dead_tuples,
            "dead_tuples_per_job": per_job(after.dead_tuples),
            "updates_per_job": per_job(after.updated - before.updated),
            "hot_updates_per_job": per_job(after.hot_updated - before.hot_updated),
            "autovacuums": after.autovacuums - before.autovacuums,
            "before": before.to_json(),
            "after": after.to_json(),
        });
        eprintln!("{figures}");
        assert_eq!(manifest_tries as usize, BOOKS * PAGES, "{figures}");
        // A SIGTERM lets the pages in flight finish; only the SIGKILL loses the pages its
        // worker had in flight (two jobs, one page each).
        assert!(total(&counts) - BOOKS * PAGES <= 2, "{figures}");
        drop(workers);
    });
}
