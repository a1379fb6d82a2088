//! The key store's tables in the state folder's database (`executions.sqlite`, beside the
//! execution records of `packbox serve`): `keys` (scope, name, the sealed value, who changed it
//! last and when), `key_changes` (every set, removal and rotation) and `keystore_meta` (a value
//! sealed under the key-encryption key, so a wrong key is told at once, not at a run).
//!
//! Calls are synchronous and short (one small transaction each); `packbox serve` makes them off
//! its async threads. SQLite's WAL lets `packbox keys` change keys while a server runs.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use super::cipher::KeyEncryptionKey;
use super::{DATABASE_FILE, KeyScope, KeyStoreError, check_name};
use crate::common::clock::{now_ms, rfc3339};

/// The largest value kept, in bytes of its JSON text.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// What the check value holds and is bound to.
const CHECK_CONTEXT: &[u8] = b"packbox-keystore-check";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keystore_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed BLOB NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (scope, name)
);
CREATE TABLE IF NOT EXISTS key_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    who TEXT NOT NULL,
    change TEXT NOT NULL,
    scope TEXT NOT NULL,
    name TEXT NOT NULL
);
";

/// A key as listings show it: never its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyEntry {
    /// Where it applies.
    pub scope: KeyScope,
    /// Its name.
    pub name: String,
    /// When it was last set (RFC 3339, UTC).
    pub updated_at: String,
    /// Who set it last (a token's name, or `cli:uid=N`).
    pub updated_by: String,
}

/// A change to the key store, for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyChange {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who (a token's name, or `cli:uid=N`).
    pub who: String,
    /// `set`, `remove` or `rotate`.
    pub change: String,
    /// The key's scope (`*` for a rotation).
    pub scope: String,
    /// The key's name (`*` for a rotation).
    pub name: String,
}

/// One page of the audit trail, newest first.
#[derive(Clone, Debug, Serialize)]
pub struct KeyChangesPage {
    /// The changes.
    pub changes: Vec<KeyChange>,
    /// The cursor of the next page; `None` on the last.
    pub next_cursor: Option<String>,
}

/// A key a run receives: `Debug` never shows its value.
#[derive(Clone)]
pub struct StoredKey {
    /// Where it came from.
    pub scope: KeyScope,
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: Value,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredKey({} at {})", self.name, self.scope)
    }
}

struct Open {
    database: PathBuf,
    /// The connection and the key, together: a rotation changes both at once.
    state: Mutex<(Connection, KeyEncryptionKey)>,
}

/// The key store of a state folder. Cheap to clone; without a key-encryption key it is empty and
/// read-only.
#[derive(Clone)]
pub struct KeyStore {
    open: Option<Arc<Open>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.open {
            Some(open) => write!(f, "KeyStore({})", open.database.display()),
            None => f.write_str("KeyStore(empty, read-only)"),
        }
    }
}

impl KeyStore {
    /// The store of a process without a key-encryption key: empty, read-only.
    pub fn empty() -> KeyStore {
        KeyStore { open: None }
    }

    /// Opens the key store of `state_dir` under the key in `key_file` (none: the empty store),
    /// checking that the key is the one its values were sealed with.
    pub fn open(state_dir: &Path, key_file: Option<&Path>) -> Result<KeyStore, KeyStoreError> {
        let Some(key_file) = key_file else {
            return Ok(KeyStore::empty());
        };
        let kek = KeyEncryptionKey::load(key_file, state_dir)?;
        let database = state_dir.join(DATABASE_FILE);
        let connection = connect(&database)?;
        let db = |what| {
            let database = database.clone();
            move |source| KeyStoreError::Database {
                database,
                what,
                source,
            }
        };
        let check: Option<Vec<u8>> = connection
            .query_row(
                "SELECT value FROM keystore_meta WHERE name = 'check'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(db("reading the check value"))?;
        let wrong_key = || KeyStoreError::WrongKey {
            file: key_file.to_path_buf(),
            database: database.clone(),
        };
        match check {
            Some(sealed) => {
                kek.open(CHECK_CONTEXT, &sealed).map_err(|_| wrong_key())?;
            }
            None => {
                let keys: i64 = connection
                    .query_row("SELECT COUNT(*) FROM keys", [], |row| row.get(0))
                    .map_err(db("counting keys"))?;
                if keys > 0 {
                    return Err(wrong_key());
                }
                let sealed = kek
                    .seal(CHECK_CONTEXT, CHECK_CONTEXT)
                    .map_err(|_| wrong_key())?;
                connection
                    .execute(
                        "INSERT OR IGNORE INTO keystore_meta (name, value) VALUES ('check', ?1)",
                        params![sealed],
                    )
                    .map_err(db("writing the check value"))?;
            }
        }
        Ok(KeyStore {
            open: Some(Arc::new(Open {
                database,
                state: Mutex::new((connection, kek)),
            })),
        })
    }

    /// Whether the store has a key-encryption key (and can be written and injected from).
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    fn with<T>(
        &self,
        work: impl FnOnce(&Path, &mut Connection, &mut KeyEncryptionKey) -> Result<T, KeyStoreError>,
    ) -> Result<T, KeyStoreError> {
        let open = self.open.as_ref().ok_or(KeyStoreError::NoKey)?;
        let mut state = open
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (connection, kek) = &mut *state;
        work(&open.database, connection, kek)
    }

    /// Sets a key (replacing its value if it exists) and records the change.
    pub fn set(
        &self,
        scope: &KeyScope,
        name: &str,
        value: &Value,
        who: &str,
    ) -> Result<(), KeyStoreError> {
        check_name(name)?;
        let plain = zeroize::Zeroizing::new(value.to_string().into_bytes());
        if plain.len() > MAX_VALUE_BYTES {
            return Err(KeyStoreError::TooLarge {
                name: name.to_string(),
                bytes: plain.len(),
                max: MAX_VALUE_BYTES,
            });
        }
        self.with(|database, connection, kek| {
            let sealed = kek
                .seal(&context(scope, name), &plain)
                .map_err(|_| tampered(scope, name))?;
            let now = now_ms();
            let tx = connection
                .transaction()
                .map_err(db_error(database, "starting a transaction"))?;
            tx.execute(
                "INSERT INTO keys (scope, name, sealed, updated_at, updated_by)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (scope, name) DO UPDATE SET
                    sealed = excluded.sealed, updated_at = excluded.updated_at,
                    updated_by = excluded.updated_by",
                params![scope.to_string(), name, sealed, now, who],
            )
            .map_err(db_error(database, "setting a key"))?;
            record_change(&tx, database, now, who, "set", &scope.to_string(), name)?;
            tx.commit().map_err(db_error(database, "committing a key"))
        })
    }

    /// Removes a key and records the change.
    pub fn remove(&self, scope: &KeyScope, name: &str, who: &str) -> Result<(), KeyStoreError> {
        self.with(|database, connection, _| {
            let now = now_ms();
            let tx = connection
                .transaction()
                .map_err(db_error(database, "starting a transaction"))?;
            let removed = tx
                .execute(
                    "DELETE FROM keys WHERE scope = ?1 AND name = ?2",
                    params![scope.to_string(), name],
                )
                .map_err(db_error(database, "removing a key"))?;
            if removed == 0 {
                return Err(KeyStoreError::NotFound {
                    scope: scope.to_string(),
                    name: name.to_string(),
                });
            }
            record_change(&tx, database, now, who, "remove", &scope.to_string(), name)?;
            tx.commit()
                .map_err(db_error(database, "committing a removal"))
        })
    }

    /// Every key, by scope and name: never a value. Empty without a key-encryption key.
    pub fn list(&self) -> Result<Vec<KeyEntry>, KeyStoreError> {
        if !self.is_open() {
            return Ok(Vec::new());
        }
        self.with(|database, connection, _| {
            let mut statement = connection
                .prepare(
                    "SELECT scope, name, updated_at, updated_by FROM keys ORDER BY scope, name",
                )
                .map_err(db_error(database, "listing keys"))?;
            let rows = statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                })
                .map_err(db_error(database, "listing keys"))?;
            let mut entries = Vec::new();
            for row in rows {
                let (scope, name, at, who) = row.map_err(db_error(database, "listing keys"))?;
                // A scope that does not parse was not written by packbox: skipped.
                if let Ok(scope) = KeyScope::parse(&scope) {
                    entries.push(KeyEntry {
                        scope,
                        name,
                        updated_at: rfc3339(at),
                        updated_by: who,
                    });
                }
            }
            Ok(entries)
        })
    }

    /// The keys a run of `action_ref` receives among those `wanted` accepts: one per name, from
    /// the most specific scope that has it. Empty without a key-encryption key.
    pub fn for_action(
        &self,
        action_ref: &str,
        wanted: impl Fn(&KeyScope, &str) -> bool,
    ) -> Result<Vec<StoredKey>, KeyStoreError> {
        if !self.is_open() {
            return Ok(Vec::new());
        }
        let scopes = KeyScope::of_action(action_ref);
        self.with(|database, connection, kek| {
            let mut chosen: std::collections::BTreeMap<String, StoredKey> = Default::default();
            for scope in &scopes {
                let mut statement = connection
                    .prepare_cached("SELECT name, sealed FROM keys WHERE scope = ?1")
                    .map_err(db_error(database, "reading keys"))?;
                let rows = statement
                    .query_map(params![scope.to_string()], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
                    })
                    .map_err(db_error(database, "reading keys"))?;
                for row in rows {
                    let (name, sealed) = row.map_err(db_error(database, "reading keys"))?;
                    if !wanted(scope, &name) {
                        continue;
                    }
                    let plain = kek
                        .open(&context(scope, &name), &sealed)
                        .map_err(|_| tampered(scope, &name))?;
                    let value: Value =
                        serde_json::from_slice(&plain).map_err(|_| tampered(scope, &name))?;
                    // Scopes come least specific first: a later one wins.
                    chosen.insert(
                        name.clone(),
                        StoredKey {
                            scope: scope.clone(),
                            name,
                            value,
                        },
                    );
                }
            }
            Ok(chosen.into_values().collect())
        })
    }

    /// Seals every value again under `new` (one transaction: all or nothing), records the
    /// rotation, and uses `new` from then on. Returns how many values were sealed again.
    pub fn rotate(&self, new: KeyEncryptionKey, who: &str) -> Result<usize, KeyStoreError> {
        self.with(|database, connection, kek| {
            let tx = connection
                .transaction()
                .map_err(db_error(database, "starting a transaction"))?;
            let rows: Vec<(String, String, Vec<u8>)> = {
                let mut statement = tx
                    .prepare("SELECT scope, name, sealed FROM keys")
                    .map_err(db_error(database, "reading keys"))?;
                let rows = statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                    .map_err(db_error(database, "reading keys"))?;
                rows.collect::<Result<_, _>>()
                    .map_err(db_error(database, "reading keys"))?
            };
            for (scope, name, sealed) in &rows {
                let key_context = format!("packbox-key\0{scope}\0{name}").into_bytes();
                let refused = || KeyStoreError::Tampered {
                    scope: scope.clone(),
                    name: name.clone(),
                };
                let plain = kek.open(&key_context, sealed).map_err(|_| refused())?;
                let resealed = new.seal(&key_context, &plain).map_err(|_| refused())?;
                tx.execute(
                    "UPDATE keys SET sealed = ?3 WHERE scope = ?1 AND name = ?2",
                    params![scope, name, resealed],
                )
                .map_err(db_error(database, "sealing a key again"))?;
            }
            let check =
                new.seal(CHECK_CONTEXT, CHECK_CONTEXT)
                    .map_err(|_| KeyStoreError::WrongKey {
                        file: new.file().to_path_buf(),
                        database: database.to_path_buf(),
                    })?;
            tx.execute(
                "INSERT INTO keystore_meta (name, value) VALUES ('check', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![check],
            )
            .map_err(db_error(database, "writing the check value"))?;
            record_change(&tx, database, now_ms(), who, "rotate", "*", "*")?;
            tx.commit()
                .map_err(db_error(database, "committing the rotation"))?;
            *kek = new;
            Ok(rows.len())
        })
    }

    /// Key changes, newest first, a page of `limit` before the cursor `before`.
    pub fn changes(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<KeyChangesPage, KeyStoreError> {
        if !self.is_open() {
            return Ok(KeyChangesPage {
                changes: Vec::new(),
                next_cursor: None,
            });
        }
        self.with(|database, connection, _| {
            let mut statement = connection
                .prepare(
                    "SELECT seq, at, who, change, scope, name FROM key_changes
                     WHERE (?1 IS NULL OR seq < ?1) ORDER BY seq DESC LIMIT ?2",
                )
                .map_err(db_error(database, "reading key changes"))?;
            let rows = statement
                .query_map(params![before, limit as i64 + 1], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        KeyChange {
                            at: rfc3339(row.get(1)?),
                            who: row.get(2)?,
                            change: row.get(3)?,
                            scope: row.get(4)?,
                            name: row.get(5)?,
                        },
                    ))
                })
                .map_err(db_error(database, "reading key changes"))?;
            let mut found: Vec<(i64, KeyChange)> = rows
                .collect::<Result<_, _>>()
                .map_err(db_error(database, "reading key changes"))?;
            let next_cursor = (found.len() > limit)
                .then(|| limit.checked_sub(1).and_then(|i| found.get(i)))
                .flatten()
                .map(|(seq, _)| seq.to_string());
            found.truncate(limit);
            Ok(KeyChangesPage {
                changes: found.into_iter().map(|(_, change)| change).collect(),
                next_cursor,
            })
        })
    }

    /// Removes key changes older than `max_age` or beyond the newest `max_count`. Returns how
    /// many went.
    pub fn prune_changes(&self, max_age: Duration, max_count: u64) -> Result<usize, KeyStoreError> {
        if !self.is_open() {
            return Ok(0);
        }
        self.with(|database, connection, _| {
            let cutoff = now_ms().saturating_sub(max_age.as_millis() as i64);
            let mut pruned = connection
                .execute("DELETE FROM key_changes WHERE at < ?1", params![cutoff])
                .map_err(db_error(database, "pruning key changes"))?;
            pruned += connection
                .execute(
                    "DELETE FROM key_changes WHERE seq < (
                        SELECT MIN(seq) FROM (
                            SELECT seq FROM key_changes ORDER BY seq DESC LIMIT ?1))",
                    params![max_count.min(i64::MAX as u64) as i64],
                )
                .map_err(db_error(database, "pruning key changes"))?;
            Ok(pruned)
        })
    }
}

/// Opens (creating it private to its owner when needed) the state folder's database and its
/// key-store tables.
fn connect(database: &Path) -> Result<Connection, KeyStoreError> {
    let file_error = |source| KeyStoreError::File {
        database: database.to_path_buf(),
        source,
    };
    if let Some(parent) = database.parent() {
        std::fs::create_dir_all(parent).map_err(file_error)?;
    }
    // SQLite gives its -wal and -shm files the database file's mode.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(database)
        .map_err(file_error)?;
    let connection = Connection::open(database).map_err(db_error(database, "opening"))?;
    connection
        .busy_timeout(Duration::from_secs(5))
        .map_err(db_error(database, "opening"))?;
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(db_error(database, "opening"))?;
    connection
        .pragma_update(None, "synchronous", "NORMAL")
        .map_err(db_error(database, "opening"))?;
    connection
        .execute_batch(SCHEMA)
        .map_err(db_error(database, "creating the key tables"))?;
    Ok(connection)
}

fn record_change(
    tx: &rusqlite::Transaction<'_>,
    database: &Path,
    at: i64,
    who: &str,
    change: &str,
    scope: &str,
    name: &str,
) -> Result<(), KeyStoreError> {
    tx.execute(
        "INSERT INTO key_changes (at, who, change, scope, name) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, who, change, scope, name],
    )
    .map_err(db_error(database, "recording a key change"))?;
    Ok(())
}

/// What a key's sealed value is bound to: its scope and name.
fn context(scope: &KeyScope, name: &str) -> Vec<u8> {
    format!("packbox-key\0{scope}\0{name}").into_bytes()
}

fn tampered(scope: &KeyScope, name: &str) -> KeyStoreError {
    KeyStoreError::Tampered {
        scope: scope.to_string(),
        name: name.to_string(),
    }
}

fn db_error(database: &Path, what: &'static str) -> impl Fn(rusqlite::Error) -> KeyStoreError {
    let database = database.to_path_buf();
    move |source| KeyStoreError::Database {
        database: database.clone(),
        what,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }
        fn state(&self) -> PathBuf {
            self.dir.path().join("state")
        }
        fn key(&self, name: &str) -> PathBuf {
            let file = self.dir.path().join(name);
            if !file.exists() {
                KeyEncryptionKey::generate(&file, &self.state()).expect("generate");
            }
            file
        }
        fn store(&self, key: &str) -> Result<KeyStore, KeyStoreError> {
            KeyStore::open(&self.state(), Some(&self.key(key)))
        }
        fn database_bytes(&self) -> Vec<u8> {
            let mut bytes = Vec::new();
            for name in ["executions.sqlite", "executions.sqlite-wal"] {
                if let Ok(mut b) = std::fs::read(self.state().join(name)) {
                    bytes.append(&mut b);
                }
            }
            bytes
        }
    }

    fn scope(text: &str) -> KeyScope {
        KeyScope::parse(text).expect("scope")
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[test]
    fn the_most_specific_scope_wins_and_values_stay_sealed() {
        let f = Fixture::new();
        let store = f.store("a.kek").expect("open");
        store
            .set(&scope("system"), "token", &json!("system-value-1"), "ops")
            .expect("set");
        store
            .set(
                &scope("pack:hello"),
                "token",
                &json!("pack-value-22"),
                "ops",
            )
            .expect("set");
        store
            .set(
                &scope("action:hello.greet"),
                "token",
                &json!("action-value-333"),
                "ops",
            )
            .expect("set");
        store
            .set(
                &scope("pack:other"),
                "token",
                &json!("other-pack-4444"),
                "ops",
            )
            .expect("set");
        store
            .set(
                &scope("system"),
                "region",
                &json!({"name": "eu-55555"}),
                "ops",
            )
            .expect("set");
        let all = |_: &KeyScope, _: &str| true;
        let keys = store.for_action("hello.greet", all).expect("read");
        let shown: Vec<(String, String, Value)> = keys
            .iter()
            .map(|k| (k.name.clone(), k.scope.to_string(), k.value.clone()))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "region".into(),
                    "system".into(),
                    json!({"name": "eu-55555"})
                ),
                (
                    "token".into(),
                    "action:hello.greet".into(),
                    json!("action-value-333")
                ),
            ]
        );
        let keys = store.for_action("hello.other", all).expect("read");
        assert_eq!(keys[1].value, json!("pack-value-22"));
        let keys = store.for_action("zzz.a", all).expect("read");
        assert_eq!(keys[1].value, json!("system-value-1"));
        let only_region = store
            .for_action("hello.greet", |_, name| name == "region")
            .expect("read");
        assert_eq!(only_region.len(), 1);
        assert!(!format!("{keys:?}").contains("system-value-1"));
        let bytes = f.database_bytes();
        for value in [
            "system-value-1",
            "pack-value-22",
            "action-value-333",
            "eu-55555",
        ] {
            assert!(!contains(&bytes, value), "{value} is in the database");
        }
        let listed: Vec<String> = store
            .list()
            .expect("list")
            .iter()
            .map(|e| format!("{} {} {}", e.scope, e.name, e.updated_by))
            .collect();
        assert_eq!(
            listed,
            [
                "action:hello.greet token ops",
                "pack:hello token ops",
                "pack:other token ops",
                "system region ops",
                "system token ops"
            ]
        );
    }

    #[test]
    fn changes_are_recorded_newest_first_and_pruned() {
        let f = Fixture::new();
        let store = f.store("a.kek").expect("open");
        store
            .set(&scope("system"), "a", &json!("1"), "ops")
            .expect("set");
        store
            .set(&scope("system"), "a", &json!("2"), "ci")
            .expect("set");
        store.remove(&scope("system"), "a", "ops").expect("rm");
        let err = store
            .remove(&scope("system"), "a", "ops")
            .expect_err("gone");
        assert!(matches!(err, KeyStoreError::NotFound { .. }), "{err}");
        let page = store.changes(None, 2).expect("changes");
        let seen: Vec<String> = page
            .changes
            .iter()
            .map(|c| format!("{} {} {} {}", c.who, c.change, c.scope, c.name))
            .collect();
        assert_eq!(seen, ["ops remove system a", "ci set system a"]);
        let cursor = page.next_cursor.expect("more").parse().expect("number");
        let rest = store.changes(Some(cursor), 10).expect("changes");
        assert_eq!(rest.changes.len(), 1);
        assert_eq!(rest.next_cursor, None);
        assert_eq!(
            store
                .prune_changes(Duration::from_secs(3600), 1)
                .expect("prune"),
            2
        );
        assert_eq!(store.changes(None, 10).expect("changes").changes.len(), 1);
    }

    #[test]
    fn a_tampered_or_moved_value_is_refused_never_garbage() {
        let f = Fixture::new();
        let store = f.store("a.kek").expect("open");
        store
            .set(&scope("system"), "a", &json!("value-a-1"), "ops")
            .expect("set");
        store
            .set(&scope("system"), "b", &json!("value-b-2"), "ops")
            .expect("set");
        let connection = Connection::open(f.state().join(DATABASE_FILE)).expect("open");
        // Moved: b's sealed value under a's name.
        connection
            .execute(
                "UPDATE keys SET sealed = (SELECT sealed FROM keys WHERE name = 'b') WHERE name = 'a'",
                [],
            )
            .expect("move");
        let err = store.for_action("p.a", |_, _| true).expect_err("moved");
        assert!(matches!(err, KeyStoreError::Tampered { .. }), "{err}");
        assert!(!err.to_string().contains("value-b-2"));
        // Changed: one bit of b flipped.
        connection
            .execute("DELETE FROM keys WHERE name = 'a'", [])
            .expect("delete");
        let sealed: Vec<u8> = connection
            .query_row("SELECT sealed FROM keys WHERE name = 'b'", [], |r| r.get(0))
            .expect("read");
        let mut flipped = sealed.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x20;
        connection
            .execute(
                "UPDATE keys SET sealed = ?1 WHERE name = 'b'",
                params![flipped],
            )
            .expect("flip");
        let err = store.for_action("p.a", |_, _| true).expect_err("changed");
        assert!(err.to_string().contains("fails authentication"), "{err}");
    }

    #[test]
    fn without_a_key_the_store_is_empty_and_refuses_writes() {
        let f = Fixture::new();
        let store = KeyStore::open(&f.state(), None).expect("empty");
        assert!(!store.is_open());
        assert!(store.list().expect("list").is_empty());
        assert!(
            store
                .for_action("p.a", |_, _| true)
                .expect("none")
                .is_empty()
        );
        let err = store
            .set(&scope("system"), "a", &json!("x"), "ops")
            .expect_err("read-only");
        assert!(matches!(err, KeyStoreError::NoKey));
        assert!(err.to_string().contains("PACKBOX_KEY_FILE"), "{err}");
        assert!(!f.state().join(DATABASE_FILE).exists(), "nothing made");
    }

    #[test]
    fn rotation_seals_every_value_again_and_retires_the_old_key() {
        let f = Fixture::new();
        let store = f.store("old.kek").expect("open");
        for n in 0..5 {
            store
                .set(
                    &scope("pack:p"),
                    &format!("k{n}"),
                    &json!(format!("value-{n}-xyz")),
                    "ops",
                )
                .expect("set");
        }
        let old_bytes = f.database_bytes();
        let new = KeyEncryptionKey::load(&f.key("new.kek"), &f.state()).expect("new key");
        assert_eq!(store.rotate(new, "ops").expect("rotate"), 5);
        let keys = store.for_action("p.a", |_, _| true).expect("read");
        assert_eq!(keys.len(), 5);
        assert_eq!(keys[3].value, json!("value-3-xyz"));
        drop(store);
        let err = f.store("old.kek").expect_err("the old key is retired");
        assert!(matches!(err, KeyStoreError::WrongKey { .. }), "{err}");
        let reopened = f.store("new.kek").expect("the new key opens it");
        assert_eq!(
            reopened.for_action("p.a", |_, _| true).expect("read").len(),
            5
        );
        let changes = reopened.changes(None, 1).expect("changes");
        assert_eq!(changes.changes[0].change, "rotate");
        assert_ne!(old_bytes, f.database_bytes());
    }

    #[test]
    fn a_wrong_key_is_told_at_open() {
        let f = Fixture::new();
        f.store("a.kek")
            .expect("open")
            .set(&scope("system"), "a", &json!("x"), "ops")
            .expect("set");
        let err = f.store("b.kek").expect_err("wrong");
        assert!(
            err.to_string().contains("does not open the key store"),
            "{err}"
        );
    }

    #[test]
    fn bad_names_and_large_values_are_refused() {
        let f = Fixture::new();
        let store = f.store("a.kek").expect("open");
        let err = store
            .set(&scope("system"), "a b", &json!("x"), "ops")
            .expect_err("name");
        assert!(matches!(err, KeyStoreError::BadName { .. }));
        let big = json!("x".repeat(MAX_VALUE_BYTES));
        let err = store
            .set(&scope("system"), "a", &big, "ops")
            .expect_err("large");
        assert!(matches!(err, KeyStoreError::TooLarge { .. }));
    }
}
