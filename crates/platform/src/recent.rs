//! A service's short memory of its reads: values reused for at most [`TTL`], unless a
//! change made in this process came since (decisions 61 and 65). The catalog keeps search
//! pages (keyed by the parsed search: words already normalized, every parameter bounded)
//! and products (keyed by id or SKU); inventory keeps the stock levels pages show.
//!
//! Bounded whatever clients send: at most [`ENTRIES_MAX`] entries and [`BYTES_MAX`]
//! (estimated) per memory; when full, expired entries go first, then the oldest. Every
//! change a service makes in this process bumps its [`Changes`] after the commit (a
//! consumer's, in [`EventHandler::committed`](crate::consumer::EventHandler::committed)),
//! which makes every entry stale at once: a writer reads its own writes, and a read that
//! raced the commit is not reused. Another replica's change is seen within [`TTL`].

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

/// How long a read may be reused.
pub const TTL: Duration = Duration::from_millis(500);
/// The most entries one memory holds.
pub const ENTRIES_MAX: usize = 256;
/// The most bytes (as [`Weigh`] estimates them) one memory holds; one entry may take at
/// most a sixteenth of it, a larger one is not kept.
pub const BYTES_MAX: usize = 8 << 20;

/// The version of a service's data in this process: bumped by every change.
#[derive(Clone, Default)]
pub struct Changes(Arc<AtomicU64>);

impl Changes {
    pub fn version(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// The data changed: everything remembered is stale.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// An estimate of the memory a value holds (its text, mostly).
pub trait Weigh {
    fn weight(&self) -> usize;
}

/// Values read at a version of a service's data, by key.
pub struct Recent<K, V> {
    inner: Mutex<Inner<K, V>>,
}

struct Inner<K, V> {
    entries: HashMap<K, Entry<V>>,
    bytes: usize,
}

struct Entry<V> {
    at: Instant,
    version: u64,
    bytes: usize,
    value: Arc<V>,
}

impl<K, V> Default for Recent<K, V> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                bytes: 0,
            }),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Weigh> Recent<K, V> {
    /// The value read for `key` at `version`, if it is younger than [`TTL`].
    pub fn get(&self, key: &K, version: u64) -> Option<Arc<V>> {
        let inner = self.inner.lock().ok()?;
        inner
            .entries
            .get(key)
            .filter(|e| e.version == version && e.at.elapsed() < TTL)
            .map(|e| e.value.clone())
    }

    /// Remembers `value`, read for `key` when the data was at `version` (read before
    /// the value was).
    pub fn put(&self, key: K, version: u64, value: Arc<V>) {
        let bytes = value.weight();
        if bytes > BYTES_MAX / 16 {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(old) = inner.entries.remove(&key) {
            inner.bytes -= old.bytes;
        }
        if inner.entries.len() >= ENTRIES_MAX || inner.bytes + bytes > BYTES_MAX {
            let now = Instant::now();
            inner.entries.retain(|_, e| now.duration_since(e.at) < TTL);
            inner.bytes = inner.entries.values().map(|e| e.bytes).sum();
            while inner.entries.len() >= ENTRIES_MAX || inner.bytes + bytes > BYTES_MAX {
                let Some(oldest) = inner
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.at)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                if let Some(e) = inner.entries.remove(&oldest) {
                    inner.bytes -= e.bytes;
                }
            }
        }
        inner.bytes += bytes;
        inner.entries.insert(
            key,
            Entry {
                at: Instant::now(),
                version,
                bytes,
                value,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Text(String);

    impl Weigh for Text {
        fn weight(&self) -> usize {
            self.0.len()
        }
    }

    fn text(s: &str) -> Arc<Text> {
        Arc::new(Text(s.to_owned()))
    }

    #[test]
    fn a_change_makes_everything_stale() {
        let changes = Changes::default();
        let recent = Recent::<u32, Text>::default();
        let v = changes.version();
        recent.put(1, v, text("one"));
        assert_eq!(recent.get(&1, changes.version()).unwrap().0, "one");
        changes.bump();
        assert!(recent.get(&1, changes.version()).is_none());
    }

    #[test]
    fn entries_expire() {
        let recent = Recent::<u32, Text>::default();
        recent.put(1, 0, text("one"));
        std::thread::sleep(TTL + Duration::from_millis(20));
        assert!(recent.get(&1, 0).is_none());
    }

    #[test]
    fn it_holds_at_most_its_bound_of_entries_and_bytes() {
        let recent = Recent::<usize, Text>::default();
        for i in 0..ENTRIES_MAX * 3 {
            recent.put(i, 0, text("x"));
        }
        let inner = recent.inner.lock().unwrap();
        assert_eq!(inner.entries.len(), ENTRIES_MAX);
        // The oldest went first.
        assert!(inner.entries.contains_key(&(ENTRIES_MAX * 3 - 1)));
        assert!(!inner.entries.contains_key(&0));
        drop(inner);

        let big = "y".repeat(BYTES_MAX / 16);
        for i in 0..40 {
            recent.put(10_000 + i, 0, text(&big));
        }
        let inner = recent.inner.lock().unwrap();
        assert!(inner.bytes <= BYTES_MAX);
        assert_eq!(
            inner.bytes,
            inner.entries.values().map(|e| e.bytes).sum::<usize>()
        );
        drop(inner);
        // Too big to keep at all.
        recent.put(1, 0, text(&"z".repeat(BYTES_MAX / 16 + 1)));
        assert!(recent.get(&1, 0).is_none());
    }
}
