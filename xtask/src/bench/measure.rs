//! Timing shell commands (wall time, peak RSS, CPU via /usr/bin/time),
//! medians and paired ratios, request counts from server logs.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::data::du;

/// One timed run of a shell command.
pub struct Measure {
    /// Wall seconds.
    pub secs: f64,
    /// Peak RSS in KiB.
    pub rss_kb: u64,
    /// User + system CPU seconds of the command and its children.
    pub cpu_secs: f64,
    /// What the command printed.
    pub stdout: String,
}

/// Runs `sh -c cmd` under /usr/bin/time, returning wall time and peak RSS.
pub fn timed(cmd: &str) -> Result<Measure, String> {
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "RSS_KB=%M\nCPU_S=%U %S", "sh", "-c", cmd])
        .output()
        .map_err(|e| format!("/usr/bin/time: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("`{cmd}` failed: {stderr}"));
    }
    let rss_kb = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RSS_KB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let cpu_secs = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("CPU_S="))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    Ok(Measure {
        secs,
        rss_kb,
        cpu_secs,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// The median (upper one for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// One timed command of the bench.
pub struct Job<'a> {
    /// Row name.
    pub name: String,
    /// Raw megabytes the command moves (for MB/s).
    pub mb: f64,
    /// Run (untimed) before each timed run; empty: none.
    pub setup: String,
    /// The timed shell command.
    pub cmd: String,
    /// A server log with one line per request, to count requests.
    pub log: Option<&'a Path>,
    /// A repository directory whose growth (bytes of its files after the
    /// command minus before) is the bytes the command sent.
    pub grow: Option<String>,
}

/// Median of the per-run ratios `base[i] / pf[i]` (throughput of pf
/// relative to the baseline, from runs made back to back).
pub fn paired_ratio(base: &[f64], pf: &[f64]) -> f64 {
    let r: Vec<f64> = base.iter().zip(pf).map(|(b, p)| b / p).collect();
    if r.is_empty() {
        f64::NAN
    } else {
        median(r)
    }
}

/// One line of the result table.
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Median wall seconds.
    pub secs: f64,
    /// Raw megabytes per second.
    pub mbps: f64,
    /// Peak RSS over the runs, MiB.
    pub rss_mb: f64,
    /// Bytes sent (or fetched) as pf reported them.
    pub wire: Option<u64>,
    /// HTTP requests the server logged per run (remote backends).
    pub requests: Option<f64>,
    /// Median growth of the job's repository directory, bytes.
    pub grew: Option<u64>,
}

/// Requests logged so far in a server log with one line per request.
fn logged_requests(log: &Path) -> u64 {
    fs::read_to_string(log)
        .map(|t| t.lines().filter(|l| l.contains(" HTTP/1.1\"")).count() as u64)
        .unwrap_or(0)
}

fn json_field(s: &str, key: &str) -> Option<u64> {
    let i = s.find(&format!("\"{key}\":"))?;
    s[i + key.len() + 3..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

/// Runs jobs `runs` times each and collects the rows.
pub struct Runner {
    /// Timed runs per job (the row shows the median).
    pub runs: usize,
    /// The rows so far.
    pub rows: Vec<Row>,
}

impl Runner {
    /// Runs `jobs` `self.runs` times, interleaved (a, b, a, b, ...), so jobs
    /// compared with each other see the same machine; adds a row per job and
    /// returns each job's times and last stdout.
    pub fn jobs(&mut self, jobs: &[Job]) -> Result<Vec<(Vec<f64>, String)>, String> {
        let mut times = vec![Vec::new(); jobs.len()];
        let mut rss = vec![0; jobs.len()];
        let mut last = vec![String::new(); jobs.len()];
        let mut requests = vec![0; jobs.len()];
        let mut grew = vec![Vec::new(); jobs.len()];
        for _ in 0..self.runs {
            for (j, job) in jobs.iter().enumerate() {
                if !job.setup.is_empty() {
                    timed(&job.setup)?;
                }
                let _ = Command::new("sync").status();
                let before = job.log.map(logged_requests).unwrap_or(0);
                let size_before = job.grow.as_deref().map(|d| du(Path::new(d)));
                let m = timed(&job.cmd)?;
                if let (Some(d), Some(b)) = (job.grow.as_deref(), size_before) {
                    grew[j].push(du(Path::new(d)).saturating_sub(b) as f64);
                }
                // The server may log a request just after answering it.
                if job.log.is_some() {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
                requests[j] += job.log.map(logged_requests).unwrap_or(0) - before;
                times[j].push(m.secs);
                rss[j] = rss[j].max(m.rss_kb);
                last[j] = m.stdout;
            }
        }
        for (j, job) in jobs.iter().enumerate() {
            let secs = median(times[j].clone());
            let wire = json_field(&last[j], "wire_bytes_uploaded")
                .or_else(|| json_field(&last[j], "wire_bytes_fetched"));
            let g = if grew[j].is_empty() {
                String::new()
            } else {
                format!("  repo +{:.1} MB", median(grew[j].clone()) / 1e6)
            };
            eprintln!(
                "    {:<34} {secs:>7.2}s  {:>8.1} MB/s  rss {:>6.1} MiB{g}",
                job.name,
                job.mb / secs,
                rss[j] as f64 / 1024.0
            );
            self.rows.push(Row {
                name: job.name.clone(),
                secs,
                mbps: job.mb / secs,
                rss_mb: rss[j] as f64 / 1024.0,
                wire,
                requests: job.log.map(|_| requests[j] as f64 / self.runs as f64),
                grew: (!grew[j].is_empty()).then(|| median(grew[j].clone()) as u64),
            });
        }
        Ok(times.into_iter().zip(last).collect())
    }

    /// The median seconds of the first row whose name starts with `name`.
    pub fn secs(&self, name: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.name.starts_with(name))
            .map(|r| r.secs)
    }

    /// `secs(b) / secs(a)`: the throughput of `a` relative to `b` (NaN if
    /// either row is missing).
    pub fn secs_ratio(&self, a: &str, b: &str) -> f64 {
        match (self.secs(a), self.secs(b)) {
            (Some(x), Some(y)) => y / x,
            _ => f64::NAN,
        }
    }

    /// One job `name` moving `mb` raw megabytes; returns its last stdout.
    pub fn one(
        &mut self,
        mb: f64,
        name: &str,
        setup: &str,
        cmd: &str,
        log: Option<&Path>,
    ) -> Result<String, String> {
        let job = Job {
            name: name.into(),
            mb,
            setup: setup.into(),
            cmd: cmd.into(),
            log,
            grow: None,
        };
        let mut out = self.jobs(&[job])?;
        Ok(out.pop().map(|(_, stdout)| stdout).unwrap_or_default())
    }
}
