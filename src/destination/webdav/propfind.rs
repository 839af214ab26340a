//! Reading a `PROPFIND` answer: a `207 Multi-Status` document (RFC 4918,
//! section 14.16) with one `response` per resource, each with an `href` and
//! `propstat` blocks whose `status` says whether their `prop`s were found.
//! Only what photosync asks for is read: `getcontentlength`, `getetag`,
//! `resourcetype` (is it a collection?), and Nextcloud's `oc:checksums`.

use quick_xml::Reader;
use quick_xml::events::Event;

/// The body photosync sends with a `PROPFIND`.
pub const REQUEST: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">
  <d:prop><d:getcontentlength/><d:getetag/><d:resourcetype/><oc:checksums/></d:prop>
</d:propfind>"#;

/// One resource of a multistatus answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// Its path, percent-decoded (as the server wrote it: absolute or not).
    pub href: String,
    /// `getcontentlength`.
    pub size: Option<u64>,
    /// `getetag`, without quotes.
    pub etag: Option<String>,
    /// Whether `resourcetype` holds `collection`.
    pub collection: bool,
    /// `oc:checksums`, each as `ALGORITHM:hex` (`SHA256:…`).
    pub checksums: Vec<String>,
}

impl Entry {
    /// The checksum of `algorithm` (`SHA256`, `SHA1`…), lowercase hex, if reported.
    pub fn checksum(&self, algorithm: &str) -> Option<String> {
        self.checksums.iter().find_map(|c| {
            let (name, value) = c.split_once(':')?;
            name.eq_ignore_ascii_case(algorithm).then(|| value.to_ascii_lowercase())
        })
    }
}

/// The resources of a multistatus document; `Err` when it is not one.
pub fn parse(body: &str) -> Result<Vec<Entry>, String> {
    let mut reader = Reader::from_str(body);
    let mut entries = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut entry = Entry::default();
    let mut found = Entry::default();
    let mut status = String::new();
    let mut text = String::new();
    let mut seen_multistatus = false;
    loop {
        match reader.read_event().map_err(|e| format!("not a WebDAV multistatus answer: {e}"))? {
            Event::Start(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                seen_multistatus |= name == "multistatus";
                if name == "collection" && path.iter().any(|p| p == "resourcetype") {
                    found.collection = true;
                }
                path.push(name);
                text.clear();
            }
            Event::Empty(empty) => {
                let name = empty.local_name();
                if name.as_ref() == b"collection" && path.iter().any(|p| p == "resourcetype") {
                    found.collection = true;
                }
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| e.to_string())?),
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(r) => text.push_str(&entity(&String::from_utf8_lossy(&r))),
            Event::End(_) => {
                let Some(name) = path.pop() else { break };
                let value = text.trim().to_owned();
                match name.as_str() {
                    "href" if path.last().is_some_and(|p| p == "response") => {
                        entry.href = percent_encoding::percent_decode_str(&value).decode_utf8_lossy().into_owned();
                    }
                    "getcontentlength" => found.size = value.parse().ok(),
                    "getetag" => found.etag = Some(value.trim_matches('"').to_owned()).filter(|e| !e.is_empty()),
                    "checksum" => found.checksums.extend(value.split_whitespace().map(str::to_owned)),
                    "status" if path.last().is_some_and(|p| p == "propstat") => status = value,
                    "propstat" => {
                        // Only properties the server found (200) count.
                        if status.split_whitespace().nth(1) == Some("200") {
                            entry.size = entry.size.or(found.size);
                            entry.etag = entry.etag.take().or(found.etag.take());
                            entry.collection |= found.collection;
                            entry.checksums.append(&mut found.checksums);
                        }
                        found = Entry::default();
                        status.clear();
                    }
                    "response" => entries.push(std::mem::take(&mut entry)),
                    _ => {}
                }
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if seen_multistatus { Ok(entries) } else { Err("not a WebDAV multistatus answer".into()) }
}

/// The text an XML entity reference stands for.
fn entity(name: &str) -> String {
    match name {
        "amp" => "&".into(),
        "lt" => "<".into(),
        "gt" => ">".into(),
        "quot" => "\"".into(),
        "apos" => "'".into(),
        _ => {
            let code = name
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| name.strip_prefix('#').and_then(|dec| dec.parse().ok()));
            code.and_then(char::from_u32).map_or_else(String::new, String::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multistatus_answer_is_read() {
        let body = r#"<?xml version="1.0"?>
<d:multistatus xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">
 <d:response>
  <d:href>/remote.php/dav/files/me/Photos/</d:href>
  <d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype><d:getetag>"c1"</d:getetag></d:prop>
   <d:status>HTTP/1.1 200 OK</d:status></d:propstat>
  <d:propstat><d:prop><d:getcontentlength/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat>
 </d:response>
 <d:response>
  <d:href>/remote.php/dav/files/me/Photos/A%20%26%20B.jpg</d:href>
  <d:propstat><d:prop><d:getcontentlength>1234</d:getcontentlength><d:getetag>&quot;e2&quot;</d:getetag>
   <d:resourcetype/><oc:checksums><oc:checksum>SHA1:ab MD5:cd SHA256:EF</oc:checksum></oc:checksums></d:prop>
   <d:status>HTTP/1.1 200 OK</d:status></d:propstat>
 </d:response>
</d:multistatus>"#;
        let entries = parse(body).expect("parsed");
        assert_eq!(entries.len(), 2);
        assert!(entries[0].collection);
        assert_eq!(entries[0].size, None);
        assert_eq!(entries[1].href, "/remote.php/dav/files/me/Photos/A & B.jpg");
        assert_eq!(entries[1].size, Some(1234));
        assert_eq!(entries[1].etag.as_deref(), Some("e2"));
        assert!(!entries[1].collection);
        assert_eq!(entries[1].checksum("sha256").as_deref(), Some("ef"));
        assert!(parse("<html>no</html>").is_err());
    }
}
