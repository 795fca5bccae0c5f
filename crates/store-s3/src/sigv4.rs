//! Signature Version 4 done here rather than by the SDK: for a request our
//! client's own transport sends (a part, signed over its CRC32C header),
//! and for the presigned URLs the SDK does not make (creating, listing,
//! completing and aborting a multipart upload). Both go through
//! `aws-sigv4`, the SDK's own signer.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode,
};

/// The signed headers to add to a request, or the signed URL.
pub(crate) enum Signed {
    /// Headers to add, by name.
    Headers(Vec<(String, String)>),
    /// The URL with its signature in the query.
    Url(String),
}

/// Signs `method` of `url` (escaped once, as S3 signs paths) carrying
/// `headers`, its payload unsigned, with `credentials` for `region`: in
/// headers, or in the URL for `presign` (that long).
pub(crate) fn sign_s3(
    credentials: aws_credential_types::Credentials,
    region: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    presign: Option<Duration>,
) -> Result<Signed, String> {
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = match presign {
        Some(_) => PayloadChecksumKind::NoHeader,
        None => PayloadChecksumKind::XAmzSha256,
    };
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    if let Some(valid_for) = presign {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(valid_for);
    }
    let identity = credentials.into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("s3")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::UnsignedPayload,
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    match presign {
        Some(_) => {
            let mut request = http::Request::new(());
            *request.uri_mut() = url.parse().map_err(|e| format!("{url}: {e}"))?;
            instructions.apply_to_request_http1x(&mut request);
            Ok(Signed::Url(request.uri().to_string()))
        }
        None => Ok(Signed::Headers(
            instructions
                .headers()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        )),
    }
}
