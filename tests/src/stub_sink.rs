//! A small HTTP server that stands in front of (or instead of) VictoriaMetrics, to
//! make a sink answer what a test needs: 400, 413, 503, or nothing at all. It
//! records every request with its decompressed body.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One request the stub received.
#[derive(Clone, Debug)]
pub struct Received {
    /// Request line, e.g. `POST /api/v2/write?org=&bucket=b&precision=ns HTTP/1.1`.
    pub request_line: String,
    /// Headers, lowercased names.
    pub headers: Vec<(String, String)>,
    /// The body, gunzipped when it was gzipped.
    pub body: String,
    /// When it arrived (read whole).
    pub at: std::time::Instant,
    /// The status the stub answered, once it has.
    pub status: Option<u16>,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decides the answer to each request: `(status, extra headers, body)`.
pub type Responder =
    Box<dyn Fn(&Received, usize) -> (u16, Vec<(String, String)>, String) + Send + Sync>;

/// A running stub; it serves until the test process ends.
pub struct StubSink {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl StubSink {
    /// Starts a stub on a free loopback port.
    pub fn start(respond: Responder) -> StubSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the stub sink");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let respond = Arc::new(respond);
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, respond) = (log.clone(), respond.clone());
                std::thread::spawn(move || serve(stream, &log, &respond));
            }
        });
        StubSink { url, received }
    }

    /// Starts a stub that answers 503 ("down") until `recovered` is set, then 204.
    pub fn down_until(recovered: Arc<AtomicBool>) -> StubSink {
        StubSink::answering_until(503, "down", recovered)
    }

    /// Starts a stub that answers `status` with `body` until `fixed` is set, then 204.
    pub fn answering_until(status: u16, body: &str, fixed: Arc<AtomicBool>) -> StubSink {
        let body = body.to_owned();
        StubSink::start(Box::new(move |_, _| {
            if fixed.load(Ordering::Relaxed) {
                (204, vec![], String::new())
            } else {
                (status, vec![], body.clone())
            }
        }))
    }

    /// The lines of the requests it answered with a 2xx (written), each once.
    pub fn written_lines(&self) -> HashSet<String> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
            .flat_map(|r| r.body.lines().map(str::to_owned))
            .collect()
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// How many different lines the requests so far carried (a batch that was
    /// retried counts once).
    pub fn distinct_lines(&self) -> usize {
        let received = self.received.lock().unwrap();
        let lines: HashSet<&str> = received.iter().flat_map(|r| r.body.lines()).collect();
        lines.len()
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Received>>, respond: &Responder) {
    let mut writer = stream.try_clone().expect("cloning the stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_lowercase(), v.trim().to_owned()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut raw = vec![0; length];
        if reader.read_exact(&mut raw).is_err() {
            return;
        }
        let gzipped = headers
            .iter()
            .any(|(k, v)| k == "content-encoding" && v == "gzip");
        let body = if gzipped {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut s)
                .expect("gzip body");
            s
        } else {
            String::from_utf8_lossy(&raw).into_owned()
        };
        let request = Received {
            request_line: request_line.trim_end().to_owned(),
            headers,
            body,
            at: std::time::Instant::now(),
            status: None,
        };
        let index = {
            let mut log = log.lock().unwrap();
            log.push(request.clone());
            log.len() - 1
        };
        let (status, extra, body) = respond(&request, index);
        log.lock().unwrap()[index].status = Some(status);
        let mut response = format!(
            "HTTP/1.1 {status} Stub\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in extra {
            response.push_str(&format!("{k}: {v}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&body);
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
