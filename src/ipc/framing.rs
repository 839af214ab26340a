//! Length-prefixed JSON frames: a 4-byte big-endian length, then that many
//! bytes of JSON. A frame longer than the reader's cap is refused before any
//! of it is read, so a bad peer cannot make the other side allocate much.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// A framing failure.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The announced length is over the cap.
    #[error("frame of {len} bytes is larger than the {cap}-byte limit")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The cap.
        cap: usize,
    },
    /// The frame is not valid JSON of the expected shape.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The connection failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame of at most `cap` bytes and decodes it.
pub async fn read_frame<T: DeserializeOwned>(
    reader: &mut (impl AsyncRead + Unpin),
    cap: usize,
) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > cap {
        return Err(FrameError::TooLarge { len, cap });
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// Encodes and writes one frame, refusing to send more than `cap` bytes.
pub async fn write_frame<T: Serialize>(
    writer: &mut (impl AsyncWrite + Unpin),
    message: &T,
    cap: usize,
) -> Result<(), FrameError> {
    let body = serde_json::to_vec(message)?;
    if body.len() > cap {
        return Err(FrameError::TooLarge { len: body.len(), cap });
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge { len: body.len(), cap })?;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_all(&body).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_caps_hold() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, &vec![1, 2, 3], 100).await.expect("write");
        let got: Vec<u32> = read_frame(&mut b, 100).await.expect("read");
        assert_eq!(got, vec![1, 2, 3]);

        a.write_all(&1_000_000u32.to_be_bytes()).await.expect("write len");
        let err = read_frame::<Vec<u32>>(&mut b, 100).await.expect_err("too large");
        assert!(matches!(err, FrameError::TooLarge { len: 1_000_000, cap: 100 }), "{err}");

        let err = write_frame(&mut a, &"x".repeat(200), 100).await.expect_err("too large to send");
        assert!(matches!(err, FrameError::TooLarge { .. }));

        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&5u32.to_be_bytes()).await.expect("len");
        a.write_all(b"{nope").await.expect("body");
        assert!(matches!(read_frame::<Vec<u32>>(&mut b, 100).await, Err(FrameError::Malformed(_))));
        drop(a);
        assert!(matches!(read_frame::<Vec<u32>>(&mut b, 100).await, Err(FrameError::Closed)));
    }
}
