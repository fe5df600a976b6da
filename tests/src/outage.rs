//! A database that is down, then comes back: a loopback port that refuses
//! connections until [`Outage::end`], and from then on forwards every connection
//! to a real VictoriaMetrics, so that what the outage held back lands there.

use std::net::{TcpListener, TcpStream};

/// A port that refuses connections until [`Outage::end`].
pub struct Outage {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
}

impl Outage {
    /// A free loopback port, with nothing listening on it.
    pub fn start() -> Outage {
        let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        Outage {
            url: format!("http://127.0.0.1:{port}"),
            port,
        }
    }

    /// From now on, connections to the port reach `to` (`http://host:port`).
    pub fn end(self, to: &str) {
        let upstream = to
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("rebinding the port");
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let upstream = upstream.clone();
                std::thread::spawn(move || forward(client, &upstream));
            }
        });
    }
}

/// Copies bytes both ways until either side closes.
fn forward(client: TcpStream, upstream: &str) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(mut client_read), Ok(mut server_read)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    let (mut client_write, mut server_write) = (client, server);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut server_read, &mut client_write);
    let _ = client_write.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}
