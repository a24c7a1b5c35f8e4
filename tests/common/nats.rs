//! Removing what tests and benches leave on the machine's NATS server.

/// Deletes a JetStream stream over the plain NATS protocol
/// (`$JS.API.STREAM.DELETE.<name>`); a server that is not there is ignored.
pub fn delete_stream(name: &str) {
    use std::io::{BufRead, BufReader, Write};
    let Ok(mut conn) = std::net::TcpStream::connect("127.0.0.1:4222") else {
        return;
    };
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    let _ = reader.read_line(&mut line); // INFO
    let _ = write!(
        conn,
        "CONNECT {{\"verbose\":false}}\r\nPUB $JS.API.STREAM.DELETE.{name} 0\r\n\r\nPING\r\n"
    );
    line.clear();
    let _ = reader.read_line(&mut line); // PONG
}
