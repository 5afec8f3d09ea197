//! `TranslationCache`: a crash-safe, append-only JSON-lines log of every translation that came back,
//! keyed by (translator, source language, target language, sha256 of the text sent). Appends are
//! fsync'd before a translation is used, so a killed run resumes without sending any text again;
//! a torn last line (the crash happened mid-append) is cut off on open. Workers claim texts, so
//! identical texts are sent once even when several workers meet them at the same time.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::InstructError;

/// Which log entries a cache serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheScope {
    /// Entries of this translator (`backend` or `backend:model`); new translations are appended.
    Translator(String),
    /// Read only (the `replay` backend): entries of the given translator, or of the only one present.
    Replay(Option<String>),
}

/// One line of the log.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    translator: String,
    source: String,
    target: String,
    /// sha256 (hex) of the text sent.
    sha256: String,
    /// The translation as it came back (still masked).
    text: String,
}

/// The key of a text within one cache: sha256 of the text sent (the translator and languages are
/// fixed per cache).
pub type TextKey = [u8; 32];

/// sha256 of a text, as a cache key.
pub fn text_key(text: &str) -> TextKey {
    Sha256::digest(text.as_bytes()).into()
}

/// What a worker should do with a text.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Already translated.
    Hit(String),
    /// This worker sends it and must [`TranslationCache::store`] or [`TranslationCache::release`] it.
    Mine,
    /// Another worker is sending it; wait with [`TranslationCache::wait`].
    Pending,
}

enum Slot {
    Done(String),
    InFlight,
}

/// The persistent translation cache (see the module docs).
pub struct TranslationCache {
    path: PathBuf,
    translator: String,
    source: String,
    target: String,
    /// `None` for a read-only (replay) cache.
    file: Option<Mutex<File>>,
    slots: Mutex<HashMap<TextKey, Slot>>,
    changed: Condvar,
}

impl TranslationCache {
    /// Opens (or creates, unless replaying) the log at `path` for `source` → `target`.
    pub fn open(path: &Path, scope: CacheScope, source: &str, target: &str) -> Result<Self, InstructError> {
        let io = |source| InstructError::Io { path: path.into(), source };
        let replay = matches!(scope, CacheScope::Replay(_));
        if replay && !path.exists() {
            return Err(InstructError::Config(format!(
                "{}: no such cache file (the replay backend reads translations only from --cache)",
                path.display()
            )));
        }
        let bytes = if path.exists() { std::fs::read(path).map_err(io)? } else { Vec::new() };
        // Everything after the last newline is a torn append from a killed run.
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let mut by_translator: HashMap<String, HashMap<TextKey, Slot>> = HashMap::new();
        for (n, line) in bytes[..whole].split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let e: Entry = serde_json::from_slice(line).map_err(|e| {
                InstructError::Config(format!(
                    "{} line {}: not a translation cache entry ({e}); the file is not a langadapt cache or was edited",
                    path.display(),
                    n + 1
                ))
            })?;
            if e.source != source || e.target != target {
                continue;
            }
            let mut key = [0u8; 32];
            hex::decode_to_slice(&e.sha256, &mut key).map_err(|err| {
                InstructError::Config(format!("{} line {}: bad sha256 '{}': {err}", path.display(), n + 1, e.sha256))
            })?;
            by_translator.entry(e.translator).or_default().insert(key, Slot::Done(e.text));
        }
        let translator = match scope {
            CacheScope::Translator(t) | CacheScope::Replay(Some(t)) => t,
            CacheScope::Replay(None) => {
                let names: BTreeSet<&String> = by_translator.keys().collect();
                match names.len() {
                    0 => String::new(),
                    1 => names.into_iter().next().cloned().unwrap_or_default(),
                    _ => {
                        return Err(InstructError::Config(format!(
                            "{}: translations by several translators ({}): pick one with --model",
                            path.display(),
                            names.into_iter().cloned().collect::<Vec<_>>().join(", ")
                        )))
                    }
                }
            }
        };
        let slots = by_translator.remove(&translator).unwrap_or_default();
        let file = if replay {
            None
        } else {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let f = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
            if whole < bytes.len() {
                f.set_len(whole as u64).map_err(io)?;
            }
            Some(Mutex::new(f))
        };
        Ok(TranslationCache {
            path: path.into(),
            translator,
            source: source.into(),
            target: target.into(),
            file,
            slots: Mutex::new(slots),
            changed: Condvar::new(),
        })
    }

    /// The translator whose entries this cache serves (for replay: the one found in the file).
    pub fn translator(&self) -> &str {
        &self.translator
    }

    /// Translations held.
    pub fn len(&self) -> usize {
        self.lock().values().filter(|s| matches!(s, Slot::Done(_))).count()
    }

    /// True when no translation is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TextKey, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks `key` up without waiting; a miss is claimed for the caller.
    pub fn claim(&self, key: &TextKey) -> Claim {
        let mut slots = self.lock();
        match slots.get(key) {
            Some(Slot::Done(t)) => Claim::Hit(t.clone()),
            Some(Slot::InFlight) => Claim::Pending,
            None if self.file.is_none() => Claim::Mine,
            None => {
                slots.insert(*key, Slot::InFlight);
                Claim::Mine
            }
        }
    }

    /// Waits until another worker's claim on `key` ends, then claims again.
    pub fn wait(&self, key: &TextKey) -> Claim {
        let mut slots = self.lock();
        while matches!(slots.get(key), Some(Slot::InFlight)) {
            slots = self.changed.wait(slots).unwrap_or_else(|p| p.into_inner());
        }
        drop(slots);
        self.claim(key)
    }

    /// Appends translations (one fsync for all) and hands them to waiting workers.
    pub fn store(&self, items: &[(TextKey, String)]) -> Result<(), InstructError> {
        let Some(file) = &self.file else { return Ok(()) };
        let mut buf = Vec::new();
        for (key, text) in items {
            let e = Entry {
                translator: self.translator.clone(),
                source: self.source.clone(),
                target: self.target.clone(),
                sha256: hex::encode(key),
                text: text.clone(),
            };
            serde_json::to_writer(&mut buf, &e).map_err(|e| InstructError::Config(e.to_string()))?;
            buf.push(b'\n');
        }
        {
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            let io = |source| InstructError::Io { path: self.path.clone(), source };
            f.write_all(&buf).map_err(io)?;
            f.sync_data().map_err(io)?;
        }
        let mut slots = self.lock();
        for (key, text) in items {
            slots.insert(*key, Slot::Done(text.clone()));
        }
        drop(slots);
        self.changed.notify_all();
        Ok(())
    }

    /// Gives up a claim (the text failed), so a waiting worker may try it itself.
    pub fn release(&self, keys: &[TextKey]) {
        let mut slots = self.lock();
        for key in keys {
            if matches!(slots.get(key), Some(Slot::InFlight)) {
                slots.remove(key);
            }
        }
        drop(slots);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(p: &Path) -> TranslationCache {
        TranslationCache::open(p, CacheScope::Translator("deepl".into()), "en", "et").unwrap()
    }

    #[test]
    fn survives_reopen_and_cuts_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        let c = open(&p);
        let (a, b) = (text_key("a"), text_key("b"));
        assert_eq!(c.claim(&a), Claim::Mine);
        assert_eq!(c.claim(&a), Claim::Pending);
        c.store(&[(a, "A".into())]).unwrap();
        assert_eq!(c.claim(&a), Claim::Hit("A".into()));
        assert_eq!(c.claim(&b), Claim::Mine);
        c.release(&[b]);
        assert_eq!(c.claim(&b), Claim::Mine);
        drop(c);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"translator\":\"deepl\",\"sou").unwrap();
        let c = open(&p);
        assert_eq!((c.len(), c.claim(&a)), (1, Claim::Hit("A".into())));
        c.store(&[(b, "B".into())]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        // Other translators and language pairs are not served.
        let other = TranslationCache::open(&p, CacheScope::Translator("google".into()), "en", "et").unwrap();
        assert!(other.is_empty());
        let replay = TranslationCache::open(&p, CacheScope::Replay(None), "en", "et").unwrap();
        assert_eq!((replay.translator(), replay.len()), ("deepl", 2));
        assert_eq!(replay.claim(&text_key("new")), Claim::Mine);
    }

    #[test]
    fn waiting_worker_gets_the_stored_text() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(&dir.path().join("c.jsonl"));
        let k = text_key("x");
        assert_eq!(c.claim(&k), Claim::Mine);
        std::thread::scope(|s| {
            let h = s.spawn(|| c.wait(&k));
            std::thread::sleep(std::time::Duration::from_millis(20));
            c.store(&[(k, "X".into())]).unwrap();
            assert_eq!(h.join().unwrap(), Claim::Hit("X".into()));
        });
    }

    #[test]
    fn rejects_garbage_and_ambiguous_replay() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        std::fs::write(&p, "{}\n").unwrap();
        let err = TranslationCache::open(&p, CacheScope::Replay(None), "en", "et").err().unwrap().to_string();
        assert!(err.contains("c.jsonl line 1: not a translation cache entry"), "{err}");
        let line = |t: &str| {
            format!(
                "{{\"translator\":\"{t}\",\"source\":\"en\",\"target\":\"et\",\"sha256\":\"{}\",\"text\":\"x\"}}\n",
                hex::encode(text_key("a"))
            )
        };
        std::fs::write(&p, line("deepl") + &line("openai:gpt")).unwrap();
        let err = TranslationCache::open(&p, CacheScope::Replay(None), "en", "et").err().unwrap().to_string();
        assert!(
            err.ends_with("translations by several translators (deepl, openai:gpt): pick one with --model"),
            "{err}"
        );
        let c = TranslationCache::open(&p, CacheScope::Replay(Some("openai:gpt".into())), "en", "et").unwrap();
        assert_eq!(c.claim(&text_key("a")), Claim::Hit("x".into()));
    }
}
