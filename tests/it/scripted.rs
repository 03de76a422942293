//! A raw loopback upstream that sends a scripted body piece by piece, on a schedule.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::support::read_request;

/// The most requests a scripted upstream answers.
const MAX_CONNECTIONS: usize = 4;

/// Starts an upstream that answers each request (up to [`MAX_CONNECTIONS`]) with `200`,
/// `content_type` and a chunked body of the `script`'s pieces, each sent after its delay, then
/// ends the body. Returns its base URL (`http://127.0.0.1:<port>/v1`).
pub(crate) async fn scripted_upstream(
    content_type: &str,
    script: Vec<(Duration, String)>,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (head, script) = (head.clone(), script.clone());
            tokio::spawn(async move {
                read_request(&mut socket).await;
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for (delay, piece) in script {
                    tokio::time::sleep(delay).await;
                    let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    base_url
}

/// `data: <json>\n\n`.
pub(crate) fn event(json: &serde_json::Value) -> String {
    format!("data: {json}\n\n")
}
