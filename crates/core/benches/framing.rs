//! Micro-benchmarks of the per-block work: planning and multipart framing.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fileuploader_core::{
    Block, BlockPlan, Dialect, FormField, Integrity, SegmentedMultipart, UploadTarget,
};
use http::{HeaderMap, Uri};

fn planning(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    let blocks = (100u64 << 20).div_ceil(10240);
    group.throughput(Throughput::Elements(blocks));
    group.bench_function("100 MiB in 10 KiB blocks", |b| {
        b.iter(|| {
            let plan = BlockPlan::new(vec![100 << 20], 10240);
            let mut n = 0;
            while let Some(block) = plan.next_block() {
                n += black_box(block).len;
            }
            n
        })
    });
    group.finish();
}

fn framing(c: &mut Criterion) {
    let url: Uri = "http://127.0.0.1:8080/upload".parse().unwrap();
    let headers = HeaderMap::new();
    let mut fields = FormField::default();
    fields.add("customField", "FormFieldValue");
    let mut group = c.benchmark_group("encode");
    for (label, size, integrity) in [
        ("10 KiB block", 10240usize, Integrity::None),
        ("10 KiB block + CRC32C", 10240, Integrity::BlockCrc32c),
        ("8 MiB block", 8 << 20, Integrity::None),
        ("8 MiB block + CRC32C", 8 << 20, Integrity::BlockCrc32c),
    ] {
        let encoder = SegmentedMultipart
            .prepare(&UploadTarget {
                url: &url,
                headers: &headers,
                fields: &fields,
                key: "RemoteFile",
                name: "scan.pdf",
                total: 100 << 20,
                upload_id: "0123456789abcdef0123456789abcdef",
                integrity,
            })
            .unwrap();
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
            b.iter(|| encoder.encode(black_box(&block), data.clone()).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, planning, framing);
criterion_main!(benches);
