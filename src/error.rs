//! One rendering of an error chain for every command.

/// The error and its causes on one line, `outer: cause: cause`, leaving out a cause whose text the line
/// already holds: most library errors print their source in their own message (`{path}: {source}`) and
/// also return it from `source()`, and printing both doubled every I/O error.
pub fn render_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct WithSource {
        path: String,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("stage tr")]
    struct Outer(#[source] WithSource);

    #[test]
    fn causes_are_printed_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated bzip2 stream");
        let e = WithSource { path: "x.bz2".into(), source: io() };
        assert_eq!(render_chain(&e), "x.bz2: truncated bzip2 stream");
        let e = Outer(WithSource { path: "x.bz2".into(), source: io() });
        assert_eq!(render_chain(&e), "stage tr: x.bz2: truncated bzip2 stream");
        let e = anyhow::Error::new(io()).context("reading x");
        assert_eq!(render_chain(e.as_ref()), "reading x: truncated bzip2 stream");
    }
}
