//! [`forward_to!`](crate::forward_to): the methods a [`BlobStore`](crate::BlobStore)
//! wrapper passes through unchanged, written once.

/// Implements the named [`BlobStore`](crate::BlobStore) methods of a
/// wrapper by calling the same method on its field `$field` (a store, or a
/// pointer to one), inside the wrapper's `impl BlobStore` block:
/// `pf_cas::forward_to!(inner: put, put_stream, list);`. Any method of the
/// trait can be named; the others are written out as usual.
#[macro_export]
macro_rules! forward_to {
    ($field:ident: $($method:ident),+ $(,)?) => {
        $( $crate::forward_to!(@one $field $method); )+
    };
    (@one $f:ident has) => {
        fn has(&self, digest: &$crate::Digest) -> $crate::Result<bool> {
            self.$f.has(digest)
        }
    };
    (@one $f:ident size) => {
        fn size(&self, digest: &$crate::Digest) -> $crate::Result<Option<u64>> {
            self.$f.size(digest)
        }
    };
    (@one $f:ident open) => {
        fn open(
            &self,
            digest: &$crate::Digest,
        ) -> $crate::Result<Box<dyn std::io::Read + Send>> {
            self.$f.open(digest)
        }
    };
    (@one $f:ident open_vouched) => {
        fn open_vouched(
            &self,
            digest: &$crate::Digest,
        ) -> $crate::Result<(Box<dyn std::io::Read + Send>, bool)> {
            self.$f.open_vouched(digest)
        }
    };
    (@one $f:ident has_intact) => {
        fn has_intact(&self, digest: &$crate::Digest, size: Option<u64>) -> $crate::Result<bool> {
            self.$f.has_intact(digest, size)
        }
    };
    (@one $f:ident has_intact_as) => {
        fn has_intact_as(
            &self,
            digest: &$crate::Digest,
            size: Option<u64>,
            namer: &mut dyn $crate::Namer,
        ) -> $crate::Result<bool> {
            self.$f.has_intact_as(digest, size, namer)
        }
    };
    (@one $f:ident put_stream_as) => {
        fn put_stream_as(
            &self,
            name: &$crate::Digest,
            namer: &mut dyn $crate::Namer,
            reader: &mut dyn std::io::Read,
        ) -> $crate::Result<u64> {
            self.$f.put_stream_as(name, namer, reader)
        }
    };
    (@one $f:ident put) => {
        fn put(&self, bytes: &[u8]) -> $crate::Result<$crate::Digest> {
            self.$f.put(bytes)
        }
    };
    (@one $f:ident put_stream) => {
        fn put_stream(
            &self,
            expected: Option<&$crate::Digest>,
            reader: &mut dyn std::io::Read,
        ) -> $crate::Result<($crate::Digest, u64)> {
            self.$f.put_stream(expected, reader)
        }
    };
    (@one $f:ident list) => {
        fn list(&self) -> $crate::Result<Vec<$crate::Digest>> {
            self.$f.list()
        }
    };
    (@one $f:ident get_named) => {
        fn get_named(&self, name: &str) -> $crate::Result<Option<Vec<u8>>> {
            self.$f.get_named(name)
        }
    };
    (@one $f:ident put_named) => {
        fn put_named(&self, name: &str, value: &[u8]) -> $crate::Result<bool> {
            self.$f.put_named(name, value)
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::{BlobStore, Digest, MemoryStore};

    /// A wrapper that counts `has` calls and forwards everything else.
    struct Counting {
        inner: MemoryStore,
        has_calls: std::sync::atomic::AtomicUsize,
    }

    impl BlobStore for Counting {
        fn has(&self, digest: &Digest) -> crate::Result<bool> {
            self.has_calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.has(digest)
        }
        crate::forward_to!(inner: size, open, put, put_stream, list, get_named, put_named);
    }

    #[test]
    fn forwarded_methods_reach_the_inner_store() {
        let w = Counting {
            inner: MemoryStore::new(),
            has_calls: Default::default(),
        };
        let d = w.put(b"abc").expect("put");
        assert!(w.inner.has(&d).expect("inner has"));
        assert_eq!(w.size(&d).expect("size"), Some(3));
        assert_eq!(w.get(&d).expect("get"), b"abc");
        assert_eq!(w.list().expect("list"), vec![d]);
        assert!(w.put_named("n", b"v").expect("put_named"));
        assert_eq!(w.get_named("n").expect("get_named"), Some(b"v".to_vec()));
        assert!(w.has(&d).expect("has"));
        assert_eq!(w.has_calls.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
