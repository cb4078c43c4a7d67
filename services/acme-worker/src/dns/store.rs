//! The built-in server's TXT records: shared between the in-process provider, the RFC 2136
//! update handler and the query path, changed atomically, with a zone serial that grows on
//! every change so that secondaries of a stealth-primary setup notice.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use hickory_proto::rr::Name;
use hickory_proto::rr::rdata::TXT;
use tokio::sync::watch;

/// At most this many TXT values in all, so a key holder cannot exhaust memory.
pub(crate) const MAX_RECORDS: usize = 10_000;
/// At most this many values on one name; concurrent challenges for one name are a handful.
pub(crate) const MAX_VALUES_PER_NAME: usize = 64;

/// The TXT RRset of one name. RFC 2181 §5.2: one TTL for the whole RRset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxtRrset {
    pub(crate) ttl: u32,
    pub(crate) values: Vec<TXT>,
}

/// One change of an update, applied in order (RFC 2136 §3.4.2).
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Add { name: Name, txt: TXT, ttl: u32 },
    Remove { name: Name, txt: TXT },
    RemoveAll { name: Name },
}

/// The update would exceed a limit; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LimitExceeded(pub(crate) String);

#[derive(Debug)]
pub(crate) struct Records {
    sets: BTreeMap<Name, TxtRrset>,
    total: usize,
    serial: u32,
}

impl Records {
    pub(crate) fn get(&self, name: &Name) -> Option<&TxtRrset> {
        self.sets.get(name)
    }

    /// Whether some stored name is strictly below `name`: then `name` is an empty non-terminal,
    /// which exists (NODATA, not NXDOMAIN; RFC 8020).
    pub(crate) fn has_names_below(&self, name: &Name) -> bool {
        // Canonical order (RFC 4034 §6.1) puts a name's descendants right after it.
        self.sets
            .range(name.clone()..)
            .find(|(n, _)| *n != name)
            .is_some_and(|(n, _)| name.zone_of(n))
    }

    /// The RRsets at or below `apex`, in canonical order.
    pub(crate) fn under<'a>(
        &'a self,
        apex: &'a Name,
    ) -> impl Iterator<Item = (&'a Name, &'a TxtRrset)> {
        self.sets
            .range(apex.clone()..)
            .take_while(move |(n, _)| apex.zone_of(n))
    }

    pub(crate) fn serial(&self) -> u32 {
        self.serial
    }

    #[cfg(test)]
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Applies `changes` all or nothing. Returns whether anything changed.
    pub(crate) fn apply(&mut self, changes: &[Change], now: u64) -> Result<bool, LimitExceeded> {
        let mut staged: HashMap<Name, Option<TxtRrset>> = HashMap::new();
        for change in changes {
            let name = match change {
                Change::Add { name, .. }
                | Change::Remove { name, .. }
                | Change::RemoveAll { name } => name,
            };
            let current = staged
                .entry(name.to_lowercase())
                .or_insert_with(|| self.sets.get(name).cloned());
            match change {
                Change::Add { txt, ttl, .. } => {
                    let set = current.get_or_insert_with(|| TxtRrset {
                        ttl: *ttl,
                        values: Vec::new(),
                    });
                    set.ttl = *ttl;
                    if !set.values.contains(txt) {
                        set.values.push(txt.clone());
                    }
                    if set.values.len() > MAX_VALUES_PER_NAME {
                        return Err(LimitExceeded(format!(
                            "more than {MAX_VALUES_PER_NAME} TXT values at {name}"
                        )));
                    }
                }
                Change::Remove { txt, .. } => {
                    if let Some(set) = current {
                        set.values.retain(|v| v != txt);
                        if set.values.is_empty() {
                            *current = None;
                        }
                    }
                }
                Change::RemoveAll { .. } => *current = None,
            }
        }

        let mut total = self.total;
        let mut changed = false;
        for (name, new) in &staged {
            let old = self.sets.get(name);
            if old != new.as_ref() {
                changed = true;
            }
            total = total - old.map_or(0, |s| s.values.len())
                + new.as_ref().map_or(0, |s| s.values.len());
        }
        if total > MAX_RECORDS {
            return Err(LimitExceeded(format!(
                "more than {MAX_RECORDS} TXT records in all"
            )));
        }
        if !changed {
            return Ok(false);
        }
        for (name, new) in staged {
            match new {
                Some(set) => {
                    self.sets.insert(name, set);
                }
                None => {
                    self.sets.remove(&name);
                }
            }
        }
        self.total = total;
        self.serial = next_serial(self.serial, now);
        Ok(true)
    }
}

/// The next SOA serial: the clock when it is ahead (RFC 1982 arithmetic), else one more, so
/// that serials also grow across restarts.
fn next_serial(current: u32, now: u64) -> u32 {
    // Truncation is intended: serials are 32-bit sequence numbers that wrap.
    let clock = now as u32;
    let ahead = clock != current && clock.wrapping_sub(current) < (1 << 31);
    if ahead {
        clock
    } else {
        current.wrapping_add(1)
    }
}

/// Shared, thread-safe handle on the records.
#[derive(Debug, Clone)]
pub(crate) struct RecordStore {
    records: Arc<RwLock<Records>>,
    serials: Arc<watch::Sender<u32>>,
}

impl RecordStore {
    pub(crate) fn new(now: u64) -> Self {
        let serial = now as u32;
        Self {
            records: Arc::new(RwLock::new(Records {
                sets: BTreeMap::new(),
                total: 0,
                serial,
            })),
            serials: Arc::new(watch::Sender::new(serial)),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Records> {
        // Records are only mutated through `apply`, which leaves them consistent even if a panic
        // unwinds through a holder of the lock.
        self.records.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with exclusive access (prerequisite checks and changes of one update are one
    /// transaction), then announces a new serial if `f` changed one.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut Records) -> R) -> R {
        let (result, before, after) = {
            let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
            let before = records.serial;
            let result = f(&mut records);
            (result, before, records.serial)
        };
        if before != after {
            self.serials.send_replace(after);
        }
        result
    }

    pub(crate) fn apply(&self, changes: &[Change], now: u64) -> Result<bool, LimitExceeded> {
        self.write(|records| records.apply(changes, now))
    }

    /// Receives the serial after every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u32> {
        self.serials.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn txt(s: &str) -> TXT {
        TXT::new(vec![s.to_owned()])
    }

    #[test]
    fn add_and_remove_single_values() {
        let store = RecordStore::new(1000);
        let n = name("_acme-challenge.a.zone.test.");
        let add = |v: &str| Change::Add {
            name: n.clone(),
            txt: txt(v),
            ttl: 60,
        };
        assert!(store.apply(&[add("one"), add("two")], 1000).unwrap());
        assert!(!store.apply(&[add("one")], 1000).unwrap());
        let first = store.read().serial();
        assert_eq!(first, 1001);
        store
            .apply(
                &[Change::Remove {
                    name: name("_ACME-challenge.A.zone.test."),
                    txt: txt("one"),
                }],
                1000,
            )
            .unwrap();
        let records = store.read();
        assert_eq!(records.get(&n).unwrap().values, vec![txt("two")]);
        assert_eq!(records.total(), 1);
        assert_eq!(records.serial(), 1002);
    }

    #[test]
    fn empty_non_terminals_and_zone_walk() {
        let store = RecordStore::new(0);
        store
            .apply(
                &[
                    Change::Add {
                        name: name("_acme-challenge.a.zone.test."),
                        txt: txt("x"),
                        ttl: 60,
                    },
                    Change::Add {
                        name: name("_acme-challenge.zone.test."),
                        txt: txt("y"),
                        ttl: 60,
                    },
                    Change::Add {
                        name: name("other.test."),
                        txt: txt("z"),
                        ttl: 60,
                    },
                ],
                5,
            )
            .unwrap();
        let records = store.read();
        assert!(records.has_names_below(&name("a.zone.test.")));
        assert!(records.has_names_below(&name("zone.test.")));
        assert!(!records.has_names_below(&name("b.zone.test.")));
        assert!(!records.has_names_below(&name("_acme-challenge.a.zone.test.")));
        let apex = name("zone.test.");
        let names: Vec<String> = records.under(&apex).map(|(n, _)| n.to_ascii()).collect();
        assert_eq!(
            names,
            ["_acme-challenge.zone.test.", "_acme-challenge.a.zone.test."]
        );
    }

    #[test]
    fn updates_are_all_or_nothing() {
        let store = RecordStore::new(0);
        let n = name("n.zone.test.");
        let changes: Vec<Change> = (0..=MAX_VALUES_PER_NAME)
            .map(|i| Change::Add {
                name: n.clone(),
                txt: txt(&i.to_string()),
                ttl: 60,
            })
            .collect();
        assert!(store.apply(&changes, 0).is_err());
        assert!(store.read().get(&n).is_none());
        assert_eq!(store.read().serial(), 0);
    }

    #[test]
    fn serials_follow_the_clock_and_wrap() {
        assert_eq!(next_serial(5, 100), 100);
        assert_eq!(next_serial(100, 100), 101);
        assert_eq!(next_serial(200, 100), 201);
        assert_eq!(next_serial(u32::MAX, 3), 3);
    }
}
