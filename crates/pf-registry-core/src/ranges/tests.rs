use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;

use super::*;
use crate::retry::RetryPolicy;
use crate::transport::{CommitRequest, EncodedBlob, FetchedManifest, UploadedBlob};

/// One encoded blob in memory, served in `piece`-byte stream chunks; counts
/// ranged reads and fails the first `fail_first` of them transiently.
struct Mem {
    digest: Digest,
    blob: Bytes,
    piece: usize,
    native: bool,
    calls: AtomicUsize,
    fail_first: usize,
    asked: Mutex<Vec<(u64, u64)>>,
}

impl Mem {
    fn new(blob: Vec<u8>, piece: usize, native: bool) -> Mem {
        Mem {
            digest: Digest::of(b"the raw bytes"),
            blob: Bytes::from(blob),
            piece,
            native,
            calls: AtomicUsize::new(0),
            fail_first: 0,
            asked: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Transport for Mem {
    fn location(&self) -> String {
        "mem".into()
    }
    async fn missing(&self, d: &[Digest]) -> Result<Vec<Digest>> {
        Ok(d.to_vec())
    }
    async fn put_blob(&self, _: &EncodedBlob) -> Result<UploadedBlob> {
        Err(RegistryError::not_supported("mem", "put"))
    }
    async fn commit(&self, _: CommitRequest<'_>) -> Result<String> {
        Err(RegistryError::not_supported("mem", "commit"))
    }
    async fn get_manifest(&self) -> Result<FetchedManifest> {
        Err(RegistryError::not_found("manifest"))
    }
    async fn get_blob(&self, d: &Digest) -> Result<ByteStream> {
        if *d != self.digest {
            return Err(RegistryError::not_found(format!("blob {d}")));
        }
        let b = self.blob.clone();
        let pieces: Vec<Result<Bytes>> = (0..b.len())
            .step_by(self.piece)
            .map(|i| Ok(b.slice(i..(i + self.piece).min(b.len()))))
            .collect();
        Ok(Box::pin(futures::stream::iter(pieces)))
    }
    async fn get_blob_range(&self, d: &Digest, offset: u64, len: u64) -> Result<Bytes> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut a) = self.asked.lock() {
            a.push((offset, len));
        }
        if n < self.fail_first {
            return Err(RegistryError::transient("mem", "503"));
        }
        if self.native {
            check(d, offset, len)?;
            let end = (offset + len).min(self.blob.len() as u64);
            let start = offset.min(end);
            exact(
                d,
                offset,
                len,
                self.blob.slice(start as usize..end as usize),
            )
        } else {
            via_stream(self, d, offset, len).await
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

fn sample(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn config() -> Config {
    Config {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        },
        concurrency: 3,
        ..Config::default()
    }
}

#[test]
fn take_skips_and_takes_across_pieces() {
    let blob = sample(1000);
    for piece in [1, 7, 100, 1000, 4096] {
        let t = Mem::new(blob.clone(), piece, false);
        for (off, len) in [(0, 1), (0, 1000), (999, 1), (3, 250), (500, 500), (99, 2)] {
            let got = rt()
                .block_on(t.get_blob_range(&t.digest, off, len))
                .expect("range");
            assert_eq!(&got[..], &blob[off as usize..(off + len) as usize]);
        }
    }
}

#[test]
fn past_end_empty_oversized_and_missing_are_errors() {
    let t = Mem::new(sample(100), 16, false);
    let rt = rt();
    for (off, len) in [(90, 11), (100, 1), (5000, 1)] {
        let e = rt
            .block_on(t.get_blob_range(&t.digest, off, len))
            .unwrap_err();
        assert!(matches!(e, RegistryError::InvalidData { .. }), "{e}");
        assert!(e.to_string().contains("past the blob's end"), "{e}");
    }
    let e = rt.block_on(t.get_blob_range(&t.digest, 0, 0)).unwrap_err();
    assert!(e.to_string().contains("empty range"), "{e}");
    let e = rt
        .block_on(t.get_blob_range(&t.digest, 0, MAX_RANGE + 1))
        .unwrap_err();
    assert!(e.to_string().contains("at most"), "{e}");
    let e = rt
        .block_on(t.get_blob_range(&t.digest, u64::MAX, 2))
        .unwrap_err();
    assert!(e.to_string().contains("overflows"), "{e}");
    let other = Digest::of(b"absent");
    let e = rt.block_on(t.get_blob_range(&other, 0, 1)).unwrap_err();
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");
}

#[test]
fn exact_refuses_short_and_long_answers() {
    let d = Digest::of(b"x");
    assert_eq!(
        &exact(&d, 0, 3, Bytes::from_static(b"abc")).unwrap()[..],
        b"abc"
    );
    assert!(exact(&d, 0, 3, Bytes::from_static(b"ab"))
        .unwrap_err()
        .to_string()
        .contains("past the blob's end"));
    assert!(exact(&d, 0, 3, Bytes::from_static(b"abcd")).is_err());
}

#[test]
fn collect_is_bounded_and_exact() {
    let d = Digest::of(b"x");
    let stream = |parts: &[&'static [u8]]| -> ByteStream {
        let v: Vec<Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures::stream::iter(v))
    };
    let rt = rt();
    let ok = rt
        .block_on(collect(stream(&[b"ab", b"c"]), &d, 7, 3))
        .unwrap();
    assert_eq!(&ok[..], b"abc");
    let short = rt
        .block_on(collect(stream(&[b"ab"]), &d, 7, 3))
        .unwrap_err();
    assert!(short.to_string().contains("past the blob's end"), "{short}");
    let long = rt
        .block_on(collect(stream(&[b"ab", b"cd"]), &d, 7, 3))
        .unwrap_err();
    assert!(long.to_string().contains("more than 3 bytes"), "{long}");
}

#[test]
fn range_headers() {
    assert_eq!(header_value(0, 1), "bytes=0-0");
    assert_eq!(header_value(10, 10), "bytes=10-19");
    assert_eq!(content_range_start("bytes 10-19/100"), Some(10));
    assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
    assert_eq!(content_range_start("bytes */100"), None);
    assert_eq!(content_range_start("bytes10-19/100"), None);
    assert_eq!(content_range_start("items 1-2/3"), None);
}

#[test]
fn plan_merges_adjacent_and_near_ranges_only() {
    let w = |o, l| Wanted::new(o, l);
    // Adjacent, overlapping, contained: one group.
    let g = plan(&[w(10, 10), w(20, 5), w(12, 3), w(0, 10)], 0).unwrap();
    assert_eq!(g.len(), 1);
    assert_eq!((g[0].offset, g[0].len), (0, 25));
    // A gap of 5 merges under 5, not under 4.
    assert_eq!(plan(&[w(0, 10), w(15, 1)], 5).unwrap().len(), 1);
    assert_eq!(plan(&[w(0, 10), w(15, 1)], 4).unwrap().len(), 2);
    // Groups never exceed MAX_RANGE.
    let big = plan(&[w(0, MAX_RANGE), w(MAX_RANGE, 1)], 1 << 30).unwrap();
    assert_eq!(big.len(), 2);
    // Empty ranges are no request; oversized ones are refused.
    assert!(plan(&[w(5, 0)], 0).unwrap().is_empty());
    assert!(plan(&[w(0, MAX_RANGE + 1)], 0).is_err());
    assert!(plan(&[w(u64::MAX, 1)], 0).is_err());
}

#[test]
fn grouped_reads_retry_transient_failures() {
    let blob = sample(5000);
    let mut t = Mem::new(blob.clone(), 64, true);
    t.fail_first = 2;
    let wanted = [
        Wanted::new(4000, 10),
        Wanted::new(0, 100),
        Wanted::new(120, 30),
    ];
    let got = rt()
        .block_on(read_ranges(&t, &config(), &t.digest, &wanted, 64))
        .expect("grouped read");
    for (w, b) in wanted.iter().zip(&got) {
        assert_eq!(
            &b[..],
            &blob[w.offset as usize..(w.offset + w.len) as usize]
        );
    }
    // Two groups, two transient failures: four calls in all.
    assert_eq!(t.calls.load(Ordering::SeqCst), 4);
}

#[test]
fn grouped_reads_fail_on_a_range_past_the_end() {
    let t = Mem::new(sample(100), 64, true);
    let wanted = [Wanted::new(0, 10), Wanted::new(95, 10)];
    let e = rt()
        .block_on(read_ranges(&t, &config(), &t.digest, &wanted, 0))
        .unwrap_err();
    assert!(matches!(e, RegistryError::InvalidData { .. }), "{e}");
    // Not retried: one call per group.
    assert_eq!(t.calls.load(Ordering::SeqCst), 2);
}

fn case() -> impl Strategy<Value = (usize, Vec<(u64, u64)>, u64, usize, bool)> {
    (1usize..20_000).prop_flat_map(|size| {
        let range = (0..size as u64).prop_flat_map(move |o| (Just(o), 0..=(size as u64 - o)));
        (
            Just(size),
            proptest::collection::vec(range, 0..24),
            prop_oneof![Just(0u64), 0u64..512, 0u64..20_000],
            1usize..3000,
            any::<bool>(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// For random range sets over a random blob, each result equals the
    /// blob's slice, and there is exactly one request per merged group,
    /// each covering its members.
    #[test]
    fn grouped_reads_equal_slicing(
        (size, ranges, gap, piece, native) in case(),
        seed in any::<u8>(),
    ) {
        let blob: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        let t = Mem::new(blob.clone(), piece, native);
        let wanted: Vec<Wanted> = ranges.iter().map(|&(o, l)| Wanted::new(o, l)).collect();
        let groups = plan(&wanted, gap).unwrap();
        let got = rt()
            .block_on(read_ranges(&t, &config(), &t.digest, &wanted, gap))
            .unwrap();
        prop_assert_eq!(got.len(), wanted.len());
        for (w, b) in wanted.iter().zip(&got) {
            prop_assert_eq!(&b[..], &blob[w.offset as usize..(w.offset + w.len) as usize]);
        }
        prop_assert_eq!(t.calls.load(Ordering::SeqCst), groups.len());
        let mut asked = t.asked.lock().unwrap().clone();
        asked.sort();
        let mut planned: Vec<(u64, u64)> = groups.iter().map(|g| (g.offset, g.len)).collect();
        planned.sort();
        prop_assert_eq!(asked, planned);
        // Groups are disjoint and more than `gap` apart.
        for pair in groups.windows(2) {
            prop_assert!(pair[1].offset > pair[0].offset + pair[0].len + gap);
        }
        // Every non-empty wanted range is inside its group.
        for g in &groups {
            for &i in &g.members {
                prop_assert!(wanted[i].offset >= g.offset);
                prop_assert!(wanted[i].offset + wanted[i].len <= g.offset + g.len);
            }
        }
    }
}
