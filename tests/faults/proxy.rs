//! A TCP proxy for tests, between a client process and a server: it passes
//! bytes both ways until told to cut a connection at a chosen moment or to
//! refuse new ones, which is how a network (or a server killed at the
//! wrong time) loses answers for real.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug)]
struct Control {
    /// Cut the connection that carries the next answer to a POST, once,
    /// when its first bytes arrive from the server (which has acted on the
    /// request by then), without passing them on.
    cut_post_answer: AtomicBool,
    /// Close every new connection at once.
    refuse: AtomicBool,
    cuts: AtomicUsize,
    /// Bumped to close every open connection.
    severed: tokio::sync::watch::Sender<u64>,
}

pub struct Proxy {
    pub url: String,
    control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a port of its own and passes connections to `upstream`
    /// (`http://host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let control = Arc::new(Control {
            cut_post_answer: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            cuts: AtomicUsize::new(0),
            severed: tokio::sync::watch::channel(0).0,
        });
        let task = {
            let control = control.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if control.refuse.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let control = control.clone();
                    tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(upstream).await {
                            pass(client, server, control).await;
                        }
                    });
                }
            })
        };
        Proxy { url, control, task }
    }

    /// Loses the answer to the next POST (see [`Control::cut_post_answer`]).
    pub fn cut_next_post_answer(&self) {
        self.control.cut_post_answer.store(true, Ordering::SeqCst);
    }

    pub fn refuse_connections(&self, refuse: bool) {
        self.control.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Closes every open connection (with [`Self::refuse_connections`],
    /// the server behind is as good as stopped).
    pub fn sever_all(&self) {
        self.control.severed.send_modify(|n| *n += 1);
    }

    /// How many answers were lost on purpose.
    pub fn cuts(&self) -> usize {
        self.control.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// True when `chunk` begins an HTTP request whose method is POST; `None`
/// when it is not the start of a request (a body, say).
fn request_is_post(chunk: &[u8]) -> Option<bool> {
    const METHODS: [&[u8]; 7] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"HEAD ",
        b"PATCH ",
        b"OPTIONS ",
    ];
    METHODS
        .iter()
        .find(|m| chunk.starts_with(m))
        .map(|m| *m == b"POST ")
}

async fn pass(client: TcpStream, server: TcpStream, control: Arc<Control>) {
    let mut severed = control.severed.subscribe();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let post_pending = Arc::new(AtomicBool::new(false));
    let upstream = {
        let post_pending = post_pending.clone();
        async move {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let Some(post) = request_is_post(&buf[..n]) {
                    post_pending.store(post, Ordering::SeqCst);
                }
                if server_write.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if post_pending.load(Ordering::SeqCst)
                && control.cut_post_answer.swap(false, Ordering::SeqCst)
            {
                control.cuts.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    // Whichever side ends first ends both: dropping the halves closes the
    // sockets.
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
        _ = severed.changed() => {}
    }
}
