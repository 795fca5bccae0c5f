//! Micro-benchmarks of the per-block work: planning, multipart framing, and
//! streaming a large block in pieces, with and without its CRC32C.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fileuploader_core::protocol::{Protocol, UploadSession, UploadTarget};
use fileuploader_core::{
    Block, BlockData, BlockPlan, FormField, Integrity, MemorySource, SegmentedMultipart, Source,
};
use http::{HeaderMap, Uri};

fn planning(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    let blocks = (100u64 << 20).div_ceil(10240);
    group.throughput(Throughput::Elements(blocks));
    group.bench_function("100 MiB in 10 KiB blocks", |b| {
        b.iter(|| {
            let plan = BlockPlan::new(vec![100 << 20], 10240);
            (0..plan.count(0))
                .filter_map(|i| plan.block(0, i))
                .map(|block| black_box(block).len)
                .sum::<u64>()
        })
    });
    group.finish();
}

/// The session of a source of 100 MiB with one form field.
fn encoder(integrity: Integrity) -> Box<dyn UploadSession> {
    let url: Uri = "http://127.0.0.1:8080/upload".parse().unwrap();
    let headers = HeaderMap::new();
    let mut fields = FormField::default();
    fields.add("customField", "FormFieldValue");
    SegmentedMultipart
        .open(&UploadTarget {
            url: &url,
            headers: &headers,
            fields: &fields,
            key: "RemoteFile",
            name: "scan.pdf",
            total: 100 << 20,
            integrity,
            threads: 1,
            block_size: 10240,
            saved: None,
            endpoints: &Default::default(),
        })
        .unwrap()
}

/// Building a block's request: framing only, whatever the block's size.
fn framing(c: &mut Criterion) {
    let encoder = encoder(Integrity::BlockCrc32c);
    let mut group = c.benchmark_group("encode");
    for (label, size) in [("10 KiB block", 10240usize), ("8 MiB block", 8 << 20)] {
        let data = Bytes::from(vec![7u8; size]);
        let block = Block {
            source: 0,
            index: 3,
            count: 100,
            offset: 3 * size as u64,
            len: size as u64,
            total: 100 << 20,
        };
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(label, |b| {
            b.iter(|| {
                let data = BlockData::memory(data.clone());
                encoder.encode(black_box(&block), data).unwrap()
            })
        });
    }
    group.finish();
}

/// An 8 MiB block of an in-memory source streamed in pieces, with its
/// CRC32C computed on the way or not: the per-piece cost, without any file
/// or socket.
fn pieces(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let size = 8u64 << 20;
    let source: Arc<dyn Source> = Arc::new(MemorySource::new(vec![7u8; size as usize]));
    let mut group = c.benchmark_group("read in pieces");
    group.throughput(Throughput::Bytes(size));
    let block = Block {
        source: 0,
        index: 0,
        count: 1,
        offset: 0,
        len: size,
        total: size,
    };
    for (label, integrity) in [
        ("8 MiB block", Integrity::None),
        ("8 MiB block + CRC32C", Integrity::BlockCrc32c),
    ] {
        let encoder = encoder(integrity);
        group.bench_function(label, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let data = BlockData::read(&source, 0, size).await.unwrap();
                    let mut body = encoder.encode(&block, data).unwrap().into_body();
                    let mut n = 0;
                    while let Some(chunk) = body.next_chunk().await {
                        n += black_box(chunk.unwrap()).len();
                    }
                    n
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, planning, framing, pieces);
criterion_main!(benches);
