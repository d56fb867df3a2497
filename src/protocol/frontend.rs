//! Decoding of frontend (F) messages the proxy must look into: Query, Parse, Bind,
//! Describe, Execute, Close, the startup packet and SASL responses.
//!
//! Every read is bounds-checked: a truncated or lying message decodes to
//! [`DecodeError`], never a panic. Decoders borrow from the frame, so the raw bytes can
//! still be forwarded untouched.

use crate::router::{Param, ParamSource};

/// A frontend message body that does not match its declared layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {message} message: {problem}")]
pub struct DecodeError {
    /// message name, e.g. "Bind"
    pub message: &'static str,
    /// what was wrong
    pub problem: &'static str,
}

/// A bounds-checked cursor over a message body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], message: &'static str) -> Self {
        Reader {
            buf,
            pos: 0,
            message,
        }
    }

    fn err(&self, problem: &'static str) -> DecodeError {
        DecodeError {
            message: self.message,
            problem,
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err("truncated"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.i16()?;
        usize::try_from(n).map_err(|_| self.err("negative count"))
    }

    /// A NUL-terminated string that must be valid UTF-8.
    fn cstr(&mut self) -> Result<&'a str, DecodeError> {
        let rest = &self.buf[self.pos..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.err("missing string terminator"))?;
        let s = std::str::from_utf8(&rest[..nul]).map_err(|_| self.err("invalid UTF-8"))?;
        self.pos += nul + 1;
        Ok(s)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.err("trailing bytes"))
        }
    }
}

/// Query (F): the SQL text of a simple query.
pub fn decode_query(body: &[u8]) -> Result<&str, DecodeError> {
    let mut r = Reader::new(body, "Query");
    let sql = r.cstr()?;
    r.finish()?;
    Ok(sql)
}

/// Parse (F).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    /// prepared statement name ("" = unnamed)
    pub name: &'a str,
    /// SQL text
    pub sql: &'a str,
    /// raw parameter type OIDs (big-endian u32 each), kept raw for re-encoding
    pub param_types: &'a [u8],
}

impl Parse<'_> {
    /// Number of parameter types given.
    pub fn param_type_count(&self) -> usize {
        self.param_types.len() / 4
    }
}

/// Decode Parse (F).
pub fn decode_parse(body: &[u8]) -> Result<Parse<'_>, DecodeError> {
    let mut r = Reader::new(body, "Parse");
    let name = r.cstr()?;
    let sql = r.cstr()?;
    let n = r.count()?;
    let param_types = r.bytes(n * 4)?;
    r.finish()?;
    Ok(Parse {
        name,
        sql,
        param_types,
    })
}

/// Bind (F), with parameter values located but not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    /// destination portal ("" = unnamed)
    pub portal: &'a str,
    /// source prepared statement ("" = unnamed)
    pub statement: &'a str,
    /// offset in the body where everything after the statement name starts; used to
    /// re-encode the Bind with a different statement name without touching the rest
    pub rest_offset: usize,
    formats: Vec<i16>,
    values: Vec<Option<&'a [u8]>>,
    /// the result column format codes (none = all text, one = all columns)
    result_formats: Vec<i16>,
}

impl<'a> Bind<'a> {
    /// Whether result column `idx` is requested in binary format.
    pub fn result_binary(&self, idx: usize) -> bool {
        match self.result_formats.len() {
            0 => false,
            1 => self.result_formats[0] == 1,
            _ => self.result_formats.get(idx) == Some(&1),
        }
    }

    /// A Bind (F) message for the same portal and statement with only the parameters
    /// `params` (1-based, in the new order) and the same result formats: the Bind of one
    /// shard's part of a split statement.
    pub fn encode_subset(&self, params: &[usize]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(self.portal.as_bytes());
        body.push(0);
        body.extend_from_slice(self.statement.as_bytes());
        body.push(0);
        body.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for &n in params {
            body.extend_from_slice(&self.format_of(n.wrapping_sub(1)).to_be_bytes());
        }
        body.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for &n in params {
            match n
                .checked_sub(1)
                .and_then(|i| self.values.get(i))
                .copied()
                .flatten()
            {
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    body.extend_from_slice(v);
                }
            }
        }
        body.extend_from_slice(&(self.result_formats.len() as i16).to_be_bytes());
        for f in &self.result_formats {
            body.extend_from_slice(&f.to_be_bytes());
        }
        let mut m = Vec::with_capacity(body.len() + 5);
        m.push(b'B');
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(&body);
        m
    }

    /// Number of result format codes the client sent (0: all text, 1: one for all).
    pub fn result_format_count(&self) -> usize {
        self.result_formats.len()
    }

    /// Number of parameter values.
    pub fn param_count(&self) -> usize {
        self.values.len()
    }

    fn format_of(&self, idx: usize) -> i16 {
        match self.formats.len() {
            0 => 0,
            1 => self.formats[0],
            _ => self.formats.get(idx).copied().unwrap_or(0),
        }
    }
}

impl ParamSource for Bind<'_> {
    fn param(&self, n: usize) -> Option<Param<'_>> {
        let idx = n.checked_sub(1)?;
        let value = self.values.get(idx)?;
        Some(match value {
            None => Param::Null,
            Some(bytes) if self.format_of(idx) == 1 => Param::Binary(bytes),
            Some(bytes) => Param::Text(bytes),
        })
    }
}

/// Decode Bind (F). Checks the whole layout, including the result-format section, so a
/// truncated Bind is rejected here rather than by the backend.
pub fn decode_bind(body: &[u8]) -> Result<Bind<'_>, DecodeError> {
    let mut r = Reader::new(body, "Bind");
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let rest_offset = r.pos;
    let nformats = r.count()?;
    let mut formats = Vec::with_capacity(nformats);
    for _ in 0..nformats {
        let f = r.i16()?;
        if f != 0 && f != 1 {
            return Err(r.err("invalid parameter format code"));
        }
        formats.push(f);
    }
    let nvalues = r.count()?;
    if nformats > 1 && nformats != nvalues {
        return Err(r.err("parameter format count does not match parameter count"));
    }
    let mut values = Vec::with_capacity(nvalues);
    for _ in 0..nvalues {
        let len = r.i32()?;
        if len == -1 {
            values.push(None);
        } else {
            let len = usize::try_from(len).map_err(|_| r.err("negative parameter length"))?;
            values.push(Some(r.bytes(len)?));
        }
    }
    let nresult = r.count()?;
    let mut result_formats = Vec::with_capacity(nresult);
    for _ in 0..nresult {
        result_formats.push(r.i16()?);
    }
    r.finish()?;
    Ok(Bind {
        portal,
        statement,
        rest_offset,
        formats,
        values,
        result_formats,
    })
}

/// Describe (F) or Close (F): `b'S'` statement or `b'P'` portal, and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// `b'S'` or `b'P'`
    pub kind: u8,
    /// statement or portal name
    pub name: &'a str,
}

/// Decode Describe (F) or Close (F).
pub fn decode_target<'a>(body: &'a [u8], message: &'static str) -> Result<Target<'a>, DecodeError> {
    let mut r = Reader::new(body, message);
    let kind = r.u8()?;
    if kind != b'S' && kind != b'P' {
        return Err(r.err("expected 'S' or 'P'"));
    }
    let name = r.cstr()?;
    r.finish()?;
    Ok(Target { kind, name })
}

/// Validate Execute (F): portal name and row limit.
pub fn decode_execute(body: &[u8]) -> Result<(&str, i32), DecodeError> {
    let mut r = Reader::new(body, "Execute");
    let portal = r.cstr()?;
    let max_rows = r.i32()?;
    r.finish()?;
    Ok((portal, max_rows))
}

/// A startup-phase packet (after the length word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// SSLRequest: answered before the session starts (see `session::negotiate`)
    SslRequest,
    /// GSSENCRequest: answered `N`
    GssEncRequest,
    /// CancelRequest with the process id and secret key the client was given
    Cancel {
        /// process id
        pid: i32,
        /// secret key
        secret: i32,
    },
    /// StartupMessage
    Startup {
        /// protocol major version
        major: u16,
        /// protocol minor version
        minor: u16,
        /// parameters (user, database, application_name, …) in order
        params: Vec<(String, String)>,
    },
}

/// Decode a startup-phase packet.
pub fn decode_startup(body: &[u8]) -> Result<StartupPacket, DecodeError> {
    let mut r = Reader::new(body, "StartupMessage");
    let code = r.i32()?;
    match code {
        80_877_103 => Ok(StartupPacket::SslRequest),
        80_877_104 => Ok(StartupPacket::GssEncRequest),
        80_877_102 => {
            let pid = r.i32()?;
            let secret = r.i32()?;
            Ok(StartupPacket::Cancel { pid, secret })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            let mut params = Vec::new();
            loop {
                let key = r.cstr()?;
                if key.is_empty() {
                    break;
                }
                let value = r.cstr()?;
                params.push((key.to_owned(), value.to_owned()));
            }
            Ok(StartupPacket::Startup {
                major,
                minor,
                params,
            })
        }
    }
}

/// SASLInitialResponse (F): mechanism name and the client-first message.
pub fn decode_sasl_initial(body: &[u8]) -> Result<(&str, &[u8]), DecodeError> {
    let mut r = Reader::new(body, "SASLInitialResponse");
    let mechanism = r.cstr()?;
    let len = r.i32()?;
    let data = if len < 0 {
        &[][..]
    } else {
        r.bytes(len as usize)?
    };
    r.finish()?;
    Ok((mechanism, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind_body(portal: &str, stmt: &str, formats: &[i16], values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(portal.as_bytes());
        b.push(0);
        b.extend_from_slice(stmt.as_bytes());
        b.push(0);
        b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
        for f in formats {
            b.extend_from_slice(&f.to_be_bytes());
        }
        b.extend_from_slice(&(values.len() as i16).to_be_bytes());
        for v in values {
            match v {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b.extend_from_slice(&0i16.to_be_bytes());
        b
    }

    #[test]
    fn bind_params_with_formats() {
        let body = bind_body("", "s1", &[0, 1], &[Some(b"42"), Some(&7i64.to_be_bytes())]);
        let bind = decode_bind(&body).unwrap();
        assert_eq!(bind.statement, "s1");
        assert_eq!(bind.param(1), Some(Param::Text(b"42")));
        assert_eq!(bind.param(2), Some(Param::Binary(&7i64.to_be_bytes())));
        assert_eq!(bind.param(3), None);
        assert_eq!(bind.param(0), None);
        assert_eq!(
            &body[bind.rest_offset..bind.rest_offset + 2],
            &2i16.to_be_bytes()
        );

        let body = bind_body("p", "", &[1], &[None, Some(b"\0\0\0\x05")]);
        let bind = decode_bind(&body).unwrap();
        assert_eq!(bind.param(1), Some(Param::Null));
        assert_eq!(bind.param(2), Some(Param::Binary(b"\0\0\0\x05")));
    }

    #[test]
    fn truncated_bind_is_an_error_at_every_length() {
        let body = bind_body("portal", "stmt", &[0, 1], &[Some(b"1234"), Some(b"xy")]);
        for cut in 0..body.len() {
            assert!(decode_bind(&body[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_bind(&body).is_ok());
        let mut lying = body.clone();
        // claim a huge parameter length
        let pos = lying.len() - 2 - 2 - 4;
        lying[pos..pos + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_bind(&lying).is_err());
    }

    #[test]
    fn parse_and_query_and_targets() {
        let mut body = b"s1\0SELECT $1\0".to_vec();
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&20u32.to_be_bytes());
        let p = decode_parse(&body).unwrap();
        assert_eq!(
            (p.name, p.sql, p.param_type_count()),
            ("s1", "SELECT $1", 1)
        );
        assert!(decode_parse(&body[..body.len() - 1]).is_err());
        assert_eq!(decode_query(b"SELECT 1\0").unwrap(), "SELECT 1");
        assert!(decode_query(b"SELECT 1").is_err());
        assert!(decode_query(b"\xff\xfe\0").is_err());
        assert_eq!(
            decode_target(b"Sfoo\0", "Describe").unwrap(),
            Target {
                kind: b'S',
                name: "foo"
            }
        );
        assert!(decode_target(b"Xfoo\0", "Describe").is_err());
        assert_eq!(decode_execute(b"\0\0\0\0\x0a").unwrap(), ("", 10));
    }

    #[test]
    fn startup_packet_kinds() {
        assert_eq!(
            decode_startup(&80_877_103i32.to_be_bytes()).unwrap(),
            StartupPacket::SslRequest
        );
        let mut body = 196_608i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0app\0database\0db\0\0");
        match decode_startup(&body).unwrap() {
            StartupPacket::Startup { major, params, .. } => {
                assert_eq!(major, 3);
                assert_eq!(params[1], ("database".into(), "db".into()));
            }
            other => panic!("{other:?}"),
        }
        assert!(decode_startup(&body[..body.len() - 3]).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..5000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 48) as usize;
            let bytes: Vec<u8> = (0..n)
                .map(|i| (seed.rotate_left(i as u32 * 7) & 0xff) as u8 % 6)
                .collect();
            let _ = decode_bind(&bytes);
            let _ = decode_parse(&bytes);
            let _ = decode_startup(&bytes);
            let _ = decode_sasl_initial(&bytes);
            let _ = decode_target(&bytes, "Close");
            let _ = decode_execute(&bytes);
        }
    }
}
