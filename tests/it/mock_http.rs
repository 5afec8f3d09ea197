//! A tiny HTTP/1.1 server on 127.0.0.1 for the translation, Hub and dump tests and the benchmark:
//! keep-alive, Content-Length bodies (none for HEAD), byte ranges ([`file`]), a handler per request,
//! scripted faults (status, delay, a response cut off, a server that dies after N requests), and a log
//! of every request it saw.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One request as the mock server saw it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
    pub at: Instant,
}

/// What the mock server does with a request.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
    /// Send the headers and half the body, then close the connection.
    pub cut: bool,
}

pub fn ok(body: Value) -> Reply {
    Reply { status: 200, headers: vec![], body: body.to_string().into(), delay: Duration::ZERO, cut: false }
}

/// A file, honouring `Range: bytes=N-` (206 with Content-Range) as a Hub CDN or dump mirror does.
pub fn file(req: &Req, bytes: &[u8]) -> Reply {
    let from =
        req.headers.get("range").and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse::<usize>().ok());
    match from {
        Some(n) if n >= bytes.len() => status(416, ""),
        Some(n) => Reply {
            status: 206,
            headers: vec![("Content-Range", format!("bytes {n}-{}/{}", bytes.len() - 1, bytes.len()))],
            body: bytes[n..].to_vec(),
            delay: Duration::ZERO,
            cut: false,
        },
        None => Reply { status: 200, headers: vec![], body: bytes.to_vec(), delay: Duration::ZERO, cut: false },
    }
}

pub fn status(code: u16, body: &str) -> Reply {
    Reply { status: code, headers: vec![], body: body.into(), delay: Duration::ZERO, cut: false }
}

/// A tiny HTTP/1.1 server (keep-alive, Content-Length bodies) answering with `handler(request, n)`.
pub struct Mock {
    pub url: String,
    reqs: Arc<Mutex<Vec<Req>>>,
}

type Handler = dyn Fn(&Req, usize) -> Reply + Send + Sync;

impl Mock {
    /// Starts a server; after `die_after` requests it closes every connection and stops listening.
    pub fn start(die_after: Option<usize>, handler: impl Fn(&Req, usize) -> Reply + Send + Sync + 'static) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let reqs = Arc::new(Mutex::new(Vec::new()));
        let dead = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (r, d) = (reqs.clone(), dead.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if d.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (r, d, h) = (r.clone(), d.clone(), handler.clone());
                std::thread::spawn(move || serve(stream, &r, &d, die_after, h.as_ref()));
            }
        });
        Mock { url, reqs }
    }

    pub fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, reqs: &Mutex<Vec<Req>>, dead: &AtomicBool, die_after: Option<usize>, h: &Handler) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || dead.load(Ordering::SeqCst) {
            return;
        }
        let method = line.split_whitespace().next().unwrap_or("").to_string();
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let len: usize = headers.get("content-length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let req = Req {
            method,
            path,
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            at: Instant::now(),
        };
        let n = {
            let mut all = reqs.lock().unwrap();
            all.push(req.clone());
            all.len() - 1
        };
        if die_after.is_some_and(|d| n >= d) {
            dead.store(true, Ordering::SeqCst);
            // Wake the accept loop so it sees the flag and drops the listener.
            let _ = TcpStream::connect(w.local_addr().unwrap());
            return;
        }
        let reply = h(&req, n);
        std::thread::sleep(reply.delay);
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let body = match (reply.cut, req.method.as_str()) {
            (_, "HEAD") => &[][..],
            (true, _) => &reply.body[..reply.body.len() / 2],
            (false, _) => &reply.body[..],
        };
        // One write: head and body in two small writes meet Nagle + delayed ACK (~40 ms a request).
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        if w.write_all(&bytes).and_then(|_| w.flush()).is_err() || reply.cut {
            return;
        }
    }
}

/// A DeepL-shaped echo: every text comes back as `[et] ` + text (tags untouched).
pub fn deepl_echo(req: &Req) -> Reply {
    let texts = req.body["text"].as_array().unwrap();
    let tr: Vec<Value> = texts
        .iter()
        .map(|t| json!({"detected_source_language": "EN", "text": format!("[et] {}", t.as_str().unwrap())}))
        .collect();
    ok(json!({ "translations": tr }))
}

/// An OpenAI-shaped echo of the user message.
pub fn openai_echo(req: &Req) -> Reply {
    let text = req.body["messages"][1]["content"].as_str().unwrap();
    ok(json!({
        "id": "x", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("[et] {text}")}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    }))
}
