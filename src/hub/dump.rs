//! Wikipedia dumps by language and date: `wiki download LANG`. Reads the dump's `dumpstatus.json` for
//! the `pages-articles-multistream` file and its index (sizes and sha1), refuses a dump whose job is not
//! `done`, and downloads both with range resume and sha1 checks into DIR (+ manifest.json).

use std::path::PathBuf;

use reqwest::Method;
use serde::Serialize;

use super::download::{Checksum, Expected, Http};
use super::HubError;
use crate::manifest::ManifestBuilder;
use crate::net::RetryPolicy;
use crate::Progress;

/// Wikimedia's own dump server, when no mirror is given.
pub const DEFAULT_MIRROR: &str = "https://dumps.wikimedia.org";

/// The jobs that produce the single multistream file: big wikis dump it in parts and recombine them.
const JOBS: &[&str] = &["articlesmultistreamdumprecombine", "articlesmultistreamdump"];

/// Settings of `wiki download`.
#[derive(Debug, Clone, Serialize)]
pub struct DumpConfig {
    /// Wikipedia language code (`tr`, `et`, `zh`).
    pub lang: String,
    /// `YYYYMMDD`, or `latest`: the newest dump whose multistream job is done.
    pub date: String,
    /// Dump site or mirror with the same layout (`{mirror}/{lang}wiki/{date}/dumpstatus.json`).
    pub mirror: String,
    /// Output directory.
    pub out: PathBuf,
    /// Retries on 429, 5xx and broken connections.
    #[serde(skip)]
    pub retry: RetryPolicy,
    /// Progress bars.
    #[serde(skip)]
    pub progress: Progress,
}

/// What `wiki download` fetched.
#[derive(Debug, Clone, Serialize)]
pub struct DumpReport {
    /// The dump's date.
    pub date: String,
    /// The `pages-articles-multistream.xml.bz2` file.
    pub dump: PathBuf,
    /// Its `multistream-index.txt.bz2`.
    pub index: PathBuf,
    /// Bytes transferred by this run (0 when both files were already complete).
    pub bytes_fetched: u64,
    /// manifest.json.
    pub manifest: PathBuf,
}

/// One file of a dump job, as dumpstatus.json lists it.
struct DumpFile {
    name: String,
    url: String,
    size: Option<u64>,
    sha1: Option<String>,
}

/// Downloads the multistream dump of `cfg.lang` at `cfg.date` and its index into `cfg.out`.
pub fn download(cfg: &DumpConfig) -> Result<DumpReport, HubError> {
    let mirror = cfg.mirror.trim_end_matches('/');
    let http = Http::new(None, mirror, cfg.retry.clone(), cfg.progress)?;
    let wiki = format!("{}wiki", cfg.lang);
    let (date, status) = if cfg.date == "latest" {
        latest(&http, mirror, &wiki)?
    } else {
        if cfg.date.len() != 8 || !cfg.date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HubError::Protocol {
                url: format!("{mirror}/{wiki}/"),
                message: format!("--date {}: expected YYYYMMDD or latest", cfg.date),
            });
        }
        (cfg.date.clone(), dump_status(&http, mirror, &wiki, &cfg.date)?)
    };
    let status_url = format!("{mirror}/{wiki}/{date}/dumpstatus.json");
    let base = format!("{wiki}-{date}-pages-articles-multistream");
    let dump = find_file(&status, &status_url, mirror, &format!("{base}.xml.bz2"))?;
    let index = find_file(&status, &status_url, mirror, &format!("{base}-index.txt.bz2"))?;
    let mut fetched = 0;
    let mut paths = Vec::new();
    for f in [&index, &dump] {
        let dest = cfg.out.join(&f.name);
        let complete = std::fs::metadata(&dest).is_ok_and(|m| f.size.is_none_or(|s| m.len() == s));
        if !complete {
            let expected = Expected { size: f.size, checksum: f.sha1.clone().map(Checksum::Sha1) };
            fetched += http.download(&f.url, &dest, &expected, &f.name)?;
        }
        paths.push(dest);
    }
    let args = serde_json::json!({"lang": cfg.lang, "date": date, "mirror": mirror});
    let mut mb = ManifestBuilder::new("wiki download", args, None);
    mb.count("bytes_fetched", fetched);
    let manifest = cfg.out.join("manifest.json");
    mb.finish(&cfg.out, &[(paths[1].clone(), None), (paths[0].clone(), None)]).and_then(|m| m.write(&manifest))?;
    Ok(DumpReport { date, dump: paths[1].clone(), index: paths[0].clone(), bytes_fetched: fetched, manifest })
}

/// `{mirror}/{wiki}/{date}/dumpstatus.json`, parsed.
fn dump_status(http: &Http, mirror: &str, wiki: &str, date: &str) -> Result<serde_json::Value, HubError> {
    let url = format!("{mirror}/{wiki}/{date}/dumpstatus.json");
    let resp = http.send(Method::GET, &url, true)?;
    if resp.status().as_u16() == 404 {
        return Err(HubError::NotFound {
            what: url,
            message: format!("no {wiki} dump dated {date} here; the dates are listed at {mirror}/{wiki}/"),
        });
    }
    if !resp.status().is_success() {
        return Err(super::download::status_error(&url, resp.status(), resp.headers()));
    }
    resp.json().map_err(|e| HubError::Protocol { url, message: format!("not JSON: {e}") })
}

/// The newest date under `{mirror}/{wiki}/` whose multistream job is done, with its status.
fn latest(http: &Http, mirror: &str, wiki: &str) -> Result<(String, serde_json::Value), HubError> {
    let url = format!("{mirror}/{wiki}/");
    let resp = http.send(Method::GET, &url, true)?;
    if !resp.status().is_success() {
        return Err(super::download::status_error(&url, resp.status(), resp.headers()));
    }
    let page = resp.text().map_err(|e| HubError::Http { url: url.clone(), message: crate::net::describe(&e) })?;
    let mut dates: Vec<&str> = page
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(|h| h.trim_end_matches('/'))
        .filter(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    dates.sort_unstable();
    dates.dedup();
    let mut unfinished = Vec::new();
    // A new dump runs for days; the one before it is the newest complete one.
    for date in dates.iter().rev().take(3) {
        let status = dump_status(http, mirror, wiki, date)?;
        match job_status(&status) {
            Some("done") => return Ok((date.to_string(), status)),
            s => unfinished.push(format!("{date}: {}", s.unwrap_or("no multistream job"))),
        }
    }
    Err(HubError::NotFound {
        what: url,
        message: if unfinished.is_empty() {
            "no dump dates listed".into()
        } else {
            format!("no finished dump among the newest ({}); pass --date YYYYMMDD", unfinished.join(", "))
        },
    })
}

/// The status of the job that holds the single multistream file.
fn job_status(status: &serde_json::Value) -> Option<&str> {
    JOBS.iter()
        .find_map(|j| {
            status["jobs"][j]["status"]
                .as_str()
                .filter(|_| status["jobs"][j]["files"].as_object().is_some_and(|f| !f.is_empty()))
        })
        .or_else(|| JOBS.iter().find_map(|j| status["jobs"][j]["status"].as_str()))
}

/// The file `name` in a done job of `status`; a job not done is refused with its status.
fn find_file(status: &serde_json::Value, status_url: &str, mirror: &str, name: &str) -> Result<DumpFile, HubError> {
    for job in JOBS {
        let j = &status["jobs"][job];
        let Some(f) = j["files"].get(name) else { continue };
        let state = j["status"].as_str().unwrap_or("unknown");
        if state != "done" {
            return Err(HubError::Protocol {
                url: status_url.into(),
                message: format!(
                    "job {job} is `{state}`, not `done`: this dump is unfinished; wait for it or pass an older --date"
                ),
            });
        }
        let url = match f["url"].as_str() {
            Some(u) if u.starts_with('/') => format!("{mirror}{u}"),
            Some(u) => u.to_string(),
            None => format!("{}/{name}", status_url.trim_end_matches("/dumpstatus.json")),
        };
        return Ok(DumpFile {
            name: name.into(),
            url,
            size: f["size"].as_u64(),
            sha1: f["sha1"].as_str().map(str::to_string),
        });
    }
    if let Some(state) = job_status(status).filter(|s| *s != "done") {
        return Err(HubError::Protocol {
            url: status_url.into(),
            message: format!("the multistream job is `{state}`, not `done`: this dump is unfinished; wait for it or pass an older --date"),
        });
    }
    Err(HubError::Protocol { url: status_url.into(), message: format!("no file {name} in jobs {}", JOBS.join(", ")) })
}

impl std::fmt::Display for DumpReport {
    /// The one-line summary `wiki download` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wiki download: {} dump {} and its index {} ({} bytes fetched, sha1 checked); manifest: {}",
            self.date,
            self.dump.display(),
            self.index.display(),
            self.bytes_fetched,
            self.manifest.display()
        )
    }
}
