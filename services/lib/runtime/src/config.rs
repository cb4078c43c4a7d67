//! Configuration: one TOML file, overridden by `RAGW_<SECTION>__<KEY>` environment variables.
//!
//! The override layer works on the parsed TOML tree rather than on the caller's type, so every
//! component shares one mechanism and the caller's `deny_unknown_fields` still catches typos in
//! variable names. Errors name the key and where it came from (file or variable), because an
//! operator facing a refused start needs to know which of the two to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use thiserror::Error;
use toml::de::{DeTable, DeValue};
use toml::{Table, Value};

/// Prefix of every variable that may override the file.
const ENV_PREFIX: &str = "RAGW_";
/// Separates nesting levels in a variable name; a single `_` stays part of the key.
const ENV_SEPARATOR: &str = "__";

/// Why the configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML.
    #[error("{origin} is not valid TOML: {message}")]
    Parse { origin: String, message: String },
    /// The merged configuration does not fit the expected shape (unknown key, wrong type,
    /// missing field, an override into something that is not a table).
    #[error("invalid configuration: {message}")]
    Invalid { message: String },
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    File(PathBuf),
    Env(String),
    /// No file and no variable set it: only reachable for fields the caller's type requires.
    Defaults,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Defaults => f.write_str("built-in defaults"),
        }
    }
}

/// Loads `T` from `file` (if any) with the `RAGW_<SECTION>__<KEY>` overrides found in `env`.
///
/// `env` is usually [`process_env`]; tests pass their own pairs so they never touch the process
/// environment. An override value is taken as TOML if it parses as a TOML value (integer, float,
/// boolean, array, inline table, quoted string) and as a plain string otherwise; quote it
/// (`RAGW_X__Y='"5"'`) to force a string that looks like a number.
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut table = match file {
        Some(path) => read_file(path)?,
        None => Table::new(),
    };
    let mut env_origins = BTreeMap::new();
    // Sorted so that a conflict between two variables is reported the same way on every start.
    let mut overrides: Vec<(Vec<String>, String, String)> = env
        .into_iter()
        .filter_map(|(name, value)| Some((env_key_path(&name)?, name, value)))
        .collect();
    overrides.sort();
    for (path, name, raw) in overrides {
        apply_override(&mut table, &path, &name, parse_env_value(&raw))?;
        tracing::debug!(variable = %name, key = %path.join("."), "configuration override from the environment");
        env_origins.insert(path, name);
    }

    let origins = Origins {
        file: file.map(Path::to_path_buf),
        env: env_origins,
    };
    table.clone().try_into().map_err(|e: toml::de::Error| {
        let message = match locate_error::<T>(&table) {
            Some(path) if !path.is_empty() => {
                let origin = origins.of(&path);
                // Overrides are typed by their look, so `5` is an integer even where a string
                // is expected; say how to get the string.
                let hint = match origin {
                    Origin::Env(_) if e.message().starts_with("invalid type") => {
                        "; quote the value (\"...\") to pass it as a string"
                    }
                    _ => "",
                };
                format!(
                    "key `{}` (from {origin}): {}{hint}",
                    path.join("."),
                    e.message()
                )
            }
            // toml's own rendering still carries the parent key path ("in `store`").
            _ => e.to_string().trim_end().replace('\n', "; "),
        };
        ConfigError::Invalid { message }
    })
}

/// The process environment, skipping variables whose name or value is not UTF-8 (which
/// [`std::env::vars`] would panic on).
pub fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

fn read_file(path: &Path) -> Result<Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<Table>().map_err(|e| ConfigError::Parse {
        origin: path.display().to_string(),
        message: e.to_string().trim_end().to_owned(),
    })
}

/// `RAGW_STORE__URL` → `["store", "url"]`; `None` for variables that are not overrides
/// (`RAGW_LOG`, `RAGW_TEST_DATABASE_URL`: no `__`), so those stay free for other uses.
fn env_key_path(name: &str) -> Option<Vec<String>> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    if !rest.contains(ENV_SEPARATOR) {
        return None;
    }
    let path: Vec<String> = rest.split(ENV_SEPARATOR).map(str::to_lowercase).collect();
    path.iter().all(|seg| !seg.is_empty()).then_some(path)
}

fn parse_env_value(raw: &str) -> Value {
    match raw.parse::<Value>() {
        // A bare date such as `2025-01-01` is a TOML datetime, but no setting takes one and a
        // string field would then refuse it; keep it as the text the operator wrote.
        Ok(Value::Datetime(_)) | Err(_) => Value::String(raw.to_owned()),
        Ok(v) => v,
    }
}

fn apply_override(
    table: &mut Table,
    path: &[String],
    var: &str,
    value: Value,
) -> Result<(), ConfigError> {
    let Some((leaf, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut current = table;
    for (depth, seg) in parents.iter().enumerate() {
        let entry = current
            .entry(seg.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(t) => t,
            other => {
                return Err(ConfigError::Invalid {
                    message: format!(
                        "environment variable {var} sets `{}`, but `{}` is a {}, not a table",
                        path.join("."),
                        path[..=depth].join("."),
                        other.type_str()
                    ),
                });
            }
        };
    }
    current.insert(leaf.clone(), value);
    Ok(())
}

struct Origins {
    file: Option<PathBuf>,
    env: BTreeMap<Vec<String>, String>,
}

impl Origins {
    /// The variable that set `path` or one of its parents, else the file.
    fn of(&self, path: &[String]) -> Origin {
        if let Some(var) = (0..=path.len())
            .rev()
            .find_map(|n| self.env.get(&path[..n]))
        {
            return Origin::Env(var.clone());
        }
        // A section created only by variables (`[store]` from `RAGW_STORE__URL`) that then
        // misses a required field is still the variables' doing.
        if let Some(var) = self
            .env
            .iter()
            .find_map(|(p, var)| p.starts_with(path).then_some(var))
            .filter(|_| !path.is_empty())
        {
            return Origin::Env(var.clone());
        }
        match &self.file {
            Some(f) => Origin::File(f.clone()),
            None => Origin::Defaults,
        }
    }
}

/// Finds the key path a deserialization error is about.
///
/// Deserializing from a `Table` yields no position and no public key path, so the merged table is
/// rendered as a document and deserialized again: toml then reports a span, which is mapped
/// back to the key it falls in.
fn locate_error<T: DeserializeOwned>(table: &Table) -> Option<Vec<String>> {
    let doc = toml::to_string(table).ok()?;
    let span = toml::from_str::<T>(&doc).err()?.span()?;
    let parsed = DeTable::parse(&doc).ok()?;
    let mut path = Vec::new();
    find_span(parsed.get_ref(), &span, &mut path).then_some(path)
}

fn find_span(table: &DeTable<'_>, span: &Range<usize>, path: &mut Vec<String>) -> bool {
    // Overlap rather than containment: a missing field is reported on the whole `[section]`
    // header, which encloses the key's own span.
    let overlaps = |r: Range<usize>| {
        r.start < span.end.max(span.start + 1) && span.start < r.end.max(r.start + 1)
    };
    for (key, value) in table {
        path.push(key.get_ref().to_string());
        if overlaps(key.span()) {
            return true;
        }
        let found_inside = match value.get_ref() {
            DeValue::Table(t) => find_span(t, span, path),
            DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let found = match item.get_ref() {
                    DeValue::Table(t) => {
                        path.push(i.to_string());
                        find_span(t, span, path) || {
                            path.pop();
                            false
                        }
                    }
                    _ => false,
                };
                found || overlaps(item.span())
            }),
            _ => false,
        };
        if found_inside || overlaps(value.span()) {
            return true;
        }
        path.pop();
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        #[serde(default)]
        store: Store,
        #[serde(default)]
        registrar: Registrar,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct Store {
        #[serde(default)]
        url: String,
        #[serde(default)]
        pool: Pool,
        #[serde(default)]
        pools: Vec<Pool>,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct Pool {
        #[serde(default)]
        max_size: u32,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct Registrar {
        #[serde(default)]
        max_attempts: u32,
        #[serde(default)]
        ratio: f64,
        #[serde(default)]
        manual_approval: bool,
        #[serde(default)]
        domains: Vec<String>,
        #[serde(default)]
        label: String,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn env_overrides_nested_section() {
        let f = file("[store]\nurl = \"sqlite://x\"\n[store.pool]\nmax_size = 2\n");
        let cfg: Cfg = load(
            Some(f.path()),
            env(&[
                ("RAGW_STORE__URL", "postgres://ragw@db/ragw"),
                ("RAGW_STORE__POOL__MAX_SIZE", "16"),
                // Not overrides: no `__`, so they must not be taken as keys.
                ("RAGW_REQUIRE_PEERS", "1"),
                ("RAGW_TEST_DATABASE_URL", "postgres://t"),
                ("RAGW_LOG", "debug"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.store.url, "postgres://ragw@db/ragw");
        assert_eq!(cfg.store.pool.max_size, 16);
    }

    #[test]
    fn env_values_are_typed() {
        let cfg: Cfg = load(
            None,
            env(&[
                ("RAGW_REGISTRAR__MAX_ATTEMPTS", "5"),
                ("RAGW_REGISTRAR__RATIO", "0.5"),
                ("RAGW_REGISTRAR__MANUAL_APPROVAL", "true"),
                ("RAGW_REGISTRAR__DOMAINS", "[\"a.example\", \"b.example\"]"),
                ("RAGW_REGISTRAR__LABEL", "2025-01-01"),
                ("RAGW_STORE__POOL", "{ max_size = 3 }"),
            ]),
        )
        .unwrap();
        assert_eq!(
            cfg.registrar,
            Registrar {
                max_attempts: 5,
                ratio: 0.5,
                manual_approval: true,
                domains: vec!["a.example".into(), "b.example".into()],
                label: "2025-01-01".into(),
            }
        );
        assert_eq!(cfg.store.pool.max_size, 3);

        let quoted: Cfg = load(None, env(&[("RAGW_REGISTRAR__LABEL", "\"42\"")])).unwrap();
        assert_eq!(quoted.registrar.label, "42");
    }

    #[test]
    fn unknown_key_from_env_names_the_variable() {
        let f = file("[store]\nurl = \"x\"\n");
        let err = load::<Cfg>(Some(f.path()), env(&[("RAGW_STORE__URLL", "y")])).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{msg}");
        assert!(msg.contains("store.urll"), "{msg}");
        assert!(msg.contains("RAGW_STORE__URLL"), "{msg}");
        assert!(msg.contains("unknown field `urll`"), "{msg}");
    }

    #[test]
    fn wrong_type_from_env_names_the_variable() {
        let err = load::<Cfg>(None, env(&[("RAGW_REGISTRAR__MAX_ATTEMPTS", "many")])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("registrar.max_attempts"), "{msg}");
        assert!(msg.contains("RAGW_REGISTRAR__MAX_ATTEMPTS"), "{msg}");

        let msg = load::<Cfg>(None, env(&[("RAGW_REGISTRAR__LABEL", "42")]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("quote the value"), "{msg}");
    }

    #[test]
    fn unknown_key_in_file_names_the_file() {
        let f = file("[registrar]\nmax_attempts = 3\nmax_atempts = 4\n");
        let err = load::<Cfg>(Some(f.path()), env(&[])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("registrar.max_atempts"), "{msg}");
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");

        let f = file("bogus = 1\n");
        let msg = load::<Cfg>(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("key `bogus`"), "{msg}");

        let f = file("[[store.pools]]\nmax_size = 1\n[[store.pools]]\nmax_sze = 2\n");
        let msg = load::<Cfg>(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("key `store.pools.1.max_sze`"), "{msg}");
    }

    #[test]
    fn override_into_a_non_table_is_refused() {
        let f = file("store = \"flat\"\n");
        let err = load::<Cfg>(Some(f.path()), env(&[("RAGW_STORE__URL", "x")])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("RAGW_STORE__URL") && msg.contains("not a table"),
            "{msg}"
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let err = load::<Cfg>(Some(&path), env(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }

    #[test]
    fn syntax_error_is_a_parse_error() {
        let f = file("[store\nurl = 1\n");
        let err = load::<Cfg>(Some(f.path()), env(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }
}
