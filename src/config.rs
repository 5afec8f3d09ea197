//! Stage settings in layers: a TOML file (its paths relative to its folder) under command-line flags,
//! deserialized once into the stage's config, so every default is the config's own serde default and the
//! CLI declares none.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Settings that could not be read or do not fit the stage's config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The settings file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key is unknown, missing or of the wrong type.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file (with line and column when known), or `flags`.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

/// Reads `file` (when given), makes the `path_keys` it holds relative to its folder, lays the set `flags`
/// over it and deserializes the result into `C`.
///
/// `flags` is any serializable struct whose field names are the config's keys: `None` and empty fields are
/// not set (a plain `bool` switch skips itself when off: `skip_serializing_if = "std::ops::Not::not"`),
/// and a table (e.g. `[lora]`) is merged key by key into the file's. A path key is `name` or
/// `array[].name` (each table of an array of tables).
pub fn layered<C: DeserializeOwned>(
    file: Option<&Path>,
    path_keys: &[&str],
    flags: &impl Serialize,
) -> Result<C, ConfigError> {
    let mut table = toml::Table::new();
    let mut origin = "flags".to_string();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        let located = |e: toml::de::Error| ConfigError::Invalid {
            origin: path.display().to_string(),
            message: crate::io::toml_error(&e, &text),
        };
        table = text.parse().map_err(located)?;
        // The file alone first, for errors with their line (unknown keys, wrong types); a key missing from
        // it may still come as a flag.
        if let Err(e) = toml::from_str::<C>(&text) {
            if !e.message().starts_with("missing field") {
                return Err(located(e));
            }
        }
        rebase(&mut table, path_keys, path.parent().unwrap_or(Path::new("")));
        origin = format!("{} and flags", path.display());
    }
    let flags = serde_json::to_value(flags)
        .map_err(|e| ConfigError::Invalid { origin: "flags".into(), message: e.to_string() })?;
    if let Some(toml::Value::Table(flags)) = to_toml(flags) {
        for (key, value) in flags {
            match (table.get_mut(&key), value) {
                (Some(toml::Value::Table(file)), toml::Value::Table(flag)) => file.extend(flag),
                (_, value) => {
                    table.insert(key, value);
                }
            }
        }
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid { origin, message: e.message().trim().to_string() })
}

/// A set flag as TOML: `None` for what is not set (null, an empty list or table).
fn to_toml(v: serde_json::Value) -> Option<toml::Value> {
    use serde_json::Value as J;
    Some(match v {
        J::Null => return None,
        J::Bool(b) => toml::Value::Boolean(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        J::String(s) => toml::Value::String(s),
        J::Array(a) if a.is_empty() => return None,
        J::Array(a) => toml::Value::Array(a.into_iter().filter_map(to_toml).collect()),
        J::Object(o) => {
            let t: toml::Table = o.into_iter().filter_map(|(k, v)| Some((k, to_toml(v)?))).collect();
            if t.is_empty() {
                return None;
            }
            toml::Value::Table(t)
        }
    })
}

/// Joins the relative paths under `keys` onto `base`.
fn rebase(table: &mut toml::Table, keys: &[&str], base: &Path) {
    let join = |v: &mut toml::Value| {
        if let toml::Value::String(p) = v {
            *p = base.join(&*p).to_string_lossy().into_owned();
        }
    };
    for key in keys {
        match key.split_once("[].") {
            Some((array, field)) => {
                if let Some(toml::Value::Array(items)) = table.get_mut(array) {
                    for item in items.iter_mut().filter_map(|i| i.as_table_mut()) {
                        item.get_mut(field).map(join);
                    }
                }
            }
            None => {
                table.get_mut(*key).map(join);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        data: PathBuf,
        #[serde(default = "three")]
        n: usize,
        #[serde(default)]
        on: bool,
        #[serde(default)]
        items: Vec<Item>,
        #[serde(default)]
        sub: Option<Sub>,
    }
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Item {
        path: PathBuf,
    }
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Sub {
        a: i64,
        b: i64,
    }
    fn three() -> usize {
        3
    }

    #[derive(Default, serde::Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<PathBuf>,
        n: Option<usize>,
        on: Option<bool>,
        sub: SubFlags,
    }
    /// A plain switch: only `--on` sets the key.
    #[derive(serde::Serialize)]
    struct Switch {
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        on: bool,
    }
    #[derive(Default, serde::Serialize)]
    struct SubFlags {
        b: Option<i64>,
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_come_from_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "data = \"d\"\non = true\n[[items]]\npath = \"x\"\n[sub]\na = 1\nb = 2\n").unwrap();
        let cfg: Cfg = layered(Some(&file), &["data", "items[].path"], &Switch { on: false }).unwrap();
        assert_eq!(cfg.data, dir.path().join("d"));
        assert_eq!(cfg.items, vec![Item { path: dir.path().join("x") }]);
        assert_eq!((cfg.n, cfg.on), (3, true), "an unset switch does not turn the file's key off");
        let flags = Flags { data: Some("e".into()), n: Some(7), sub: SubFlags { b: Some(9) }, ..Flags::default() };
        let cfg: Cfg = layered(Some(&file), &["data"], &flags).unwrap();
        assert_eq!((cfg.data, cfg.n), (PathBuf::from("e"), 7), "flag paths stay relative to the working directory");
        assert_eq!(cfg.sub, Some(Sub { a: 1, b: 9 }), "a flag changes one key of a table");
        let flags = Flags { on: Some(false), ..Flags::default() };
        let cfg: Cfg = layered(Some(&file), &["data"], &flags).unwrap();
        assert!(!cfg.on, "an explicit false wins over the file");
    }

    #[test]
    fn errors_name_the_file_and_line_or_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "data = \"d\"\nbogus = 1\n").unwrap();
        let e = layered::<Cfg>(Some(&file), &[], &Flags::default()).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: line 2, column 1: unknown field `bogus`, expected one of `data`, `n`, `on`, `items`, `sub`",
                file.display()
            )
        );
        let e = layered::<Cfg>(None, &[], &Flags::default()).unwrap_err().to_string();
        assert_eq!(e, "flags: missing field `data`");
    }
}
