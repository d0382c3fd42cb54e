//! `cargo xtask bench` options.

/// A group of rows `--scenario` can select.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scenario {
    /// Baselines, pf's first push, re-pushes and pulls, with restic and borg.
    Base,
    /// What each zstd level costs and saves (`--levels`).
    Levels,
    /// Re-backups after scattered in-place edits and after appends + an insertion.
    Edits,
    /// Pull / restore of each edited version with the previous one local
    /// (runs the edit backups it needs, timed as in `edits`).
    Pull,
    /// The many-small-files data set.
    Small,
    /// pf alone, one run: push and pull at `--size`, for peak RSS.
    Big,
    /// pf's encrypted push and pull beside its plain ones and restic
    /// (which always encrypts), on the base version.
    Crypt,
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub const ALL: [Scenario; 7] = [
        Scenario::Base,
        Scenario::Crypt,
        Scenario::Small,
        Scenario::Levels,
        Scenario::Edits,
        Scenario::Pull,
        Scenario::Big,
    ];

    fn parse(s: &str) -> Result<Scenario, String> {
        Ok(match s {
            "base" => Scenario::Base,
            "levels" => Scenario::Levels,
            "edits" => Scenario::Edits,
            "pull" => Scenario::Pull,
            "small" => Scenario::Small,
            "big" => Scenario::Big,
            "crypt" => Scenario::Crypt,
            _ => {
                return Err(format!(
                    "--scenario {s}: one of base, levels, edits, pull, small, crypt, big, all"
                ))
            }
        })
    }
}

/// What to run.
pub struct Opts {
    /// Bytes of the generated snapshot.
    pub size: u64,
    /// Timed runs per row (the row shows the median).
    pub runs: usize,
    /// Also benchmark the OCI backend against a local docker-registry.
    pub oci: bool,
    /// Also benchmark the S3 backend against a local moto server.
    pub s3: bool,
    /// zstd levels to compare on a first push (whole snapshot and its
    /// compressible part); empty: no level rows.
    pub levels: Vec<i32>,
    /// The selected scenarios.
    pub scenarios: Vec<Scenario>,
    /// Files in the many-small-files data set.
    pub small_files: u64,
    /// A `pf` binary to use instead of building one (release) with cargo.
    pub pf: Option<String>,
}

impl Opts {
    /// Whether `s` was selected.
    pub fn has(&self, s: Scenario) -> bool {
        self.scenarios.contains(&s)
    }
}

/// Parses the bench's arguments.
pub fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        size: 1 << 30,
        runs: 3,
        oci: false,
        s3: false,
        levels: vec![1, 3, 6, 9],
        scenarios: Scenario::ALL
            .into_iter()
            .filter(|s| *s != Scenario::Big)
            .collect(),
        small_files: 100_000,
        pf: None,
    };
    let mut i = 0;
    let value = |i: usize, what: &str| {
        args.get(i + 1)
            .cloned()
            .ok_or_else(|| format!("{what} needs a value"))
    };
    while i < args.len() {
        match args[i].as_str() {
            "--quick" => {
                o.size = 64 << 20;
                o.runs = 1;
                o.levels = vec![];
                o.small_files = 10_000;
                i += 1;
                continue;
            }
            "--size" => o.size = parse_size(&value(i, "--size")?)?,
            "--runs" => {
                o.runs = value(i, "--runs")?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--runs needs a number > 0")?
            }
            "--small-files" => {
                o.small_files = value(i, "--small-files")?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--small-files needs a number > 0")?
            }
            "--pf" => o.pf = Some(value(i, "--pf")?),
            "--scenario" => {
                let v = value(i, "--scenario")?;
                o.scenarios = if v == "all" {
                    Scenario::ALL.to_vec()
                } else {
                    let mut s = Vec::new();
                    for name in v.split(',') {
                        s.push(Scenario::parse(name)?);
                    }
                    Scenario::ALL
                        .into_iter()
                        .filter(|x| s.contains(x))
                        .collect()
                };
            }
            "--backend" => {
                // The file backend always runs: it is the reference row.
                // Repeatable, or comma-separated.
                for b in value(i, "--backend")?.split(',') {
                    match b {
                        "file" => {}
                        "oci" => o.oci = true,
                        "s3" => o.s3 = true,
                        _ => return Err(format!("--backend {b}: one of file, oci, s3")),
                    }
                }
            }
            "--levels" => {
                let v = value(i, "--levels")?;
                o.levels = if v == "none" {
                    vec![]
                } else {
                    v.split(',')
                        .map(|l| match l.parse::<i32>() {
                            Ok(n) if (1..=22).contains(&n) => Ok(n),
                            _ => Err(format!("--levels {l}: a zstd level 1..=22")),
                        })
                        .collect::<Result<_, _>>()?
                };
            }
            other => return Err(format!("unknown bench option {other}")),
        }
        i += 2;
    }
    // The generated snapshot's fixed parts (two 4 MiB files, half the size
    // in one file) need at least this much.
    if o.size < 32 << 20 {
        return Err("--size must be at least 32MiB".into());
    }
    Ok(o)
}

/// `1GiB`, `256MiB` or a byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mul) = if let Some(n) = s.strip_suffix("GiB") {
        (n, 1u64 << 30)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1 << 20)
    } else {
        (s, 1)
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n * mul)
        .map_err(|_| format!("bad size {s:?} (e.g. 1GiB, 256MiB)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn scenarios_default_to_all_but_big_and_all_means_all() {
        let o = parse(&[]).unwrap();
        assert!(o.has(Scenario::Edits) && o.has(Scenario::Small) && !o.has(Scenario::Big));
        assert!(
            o.has(Scenario::Crypt),
            "the encryption rows are cheap: default"
        );
        let o = parse(&args("--scenario all")).unwrap();
        assert_eq!(o.scenarios, Scenario::ALL.to_vec());
        let o = parse(&args("--scenario small,edits")).unwrap();
        assert_eq!(o.scenarios, vec![Scenario::Small, Scenario::Edits]);
        assert!(parse(&args("--scenario nope")).is_err());
    }

    #[test]
    fn quick_is_small_and_later_options_override_it() {
        let o = parse(&args("--quick")).unwrap();
        assert_eq!((o.size, o.runs, o.levels.len()), (64 << 20, 1, 0));
        let o = parse(&args("--quick --size 1GiB --runs 2")).unwrap();
        assert_eq!((o.size, o.runs), (1 << 30, 2));
        assert!(parse(&args("--size 1MiB")).is_err());
    }
}
