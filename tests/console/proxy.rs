//! A TCP relay on loopback between the browser and a test server, which can drop every
//! connection at once (as a flaky network or a restarted proxy would) and keeps what clients
//! sent, so a test can see how the console asked again.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Bytes kept of what clients sent, over every connection.
const KEPT: usize = 1 << 20;

/// A relay to one server address.
pub struct Relay {
    /// `http://127.0.0.1:PORT`, to give the browser instead of the server's address.
    pub url: String,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    sent: Arc<Mutex<Vec<u8>>>,
    accept: AbortHandle,
}

impl Relay {
    /// Relays connections on a new loopback port to `target` (`127.0.0.1:PORT`).
    pub async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let sent: Arc<Mutex<Vec<u8>>> = Arc::default();
        let accept = {
            let (tasks, sent) = (Arc::clone(&tasks), Arc::clone(&sent));
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        continue;
                    };
                    let (mut client_in, mut client_out) = client.into_split();
                    let (mut server_in, mut server_out) = server.into_split();
                    let sent = Arc::clone(&sent);
                    let up = tokio::spawn(async move {
                        let mut buffer = [0u8; 16 << 10];
                        while let Ok(n) = client_in.read(&mut buffer).await {
                            if n == 0 || server_out.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                            if let Ok(mut sent) = sent.lock() {
                                let room = KEPT.saturating_sub(sent.len()).min(n);
                                sent.extend_from_slice(&buffer[..room]);
                            }
                        }
                    });
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_in, &mut client_out).await;
                    });
                    if let Ok(mut tasks) = tasks.lock() {
                        tasks.push(up.abort_handle());
                        tasks.push(down.abort_handle());
                    }
                }
            })
            .abort_handle()
        };
        Relay {
            url,
            tasks,
            sent,
            accept,
        }
    }

    /// Drops every connection open now (new ones are relayed as before).
    pub fn drop_connections(&self) -> usize {
        let tasks: Vec<AbortHandle> = self
            .tasks
            .lock()
            .map(|mut tasks| tasks.drain(..).collect())
            .unwrap_or_default();
        for task in &tasks {
            task.abort();
        }
        tasks.len() / 2
    }

    /// What clients sent so far (requests and their headers), as text.
    pub fn sent(&self) -> String {
        self.sent
            .lock()
            .map(|sent| String::from_utf8_lossy(&sent).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_connections();
    }
}
