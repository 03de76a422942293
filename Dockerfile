# syntax=docker/dockerfile:1
# llmgate's image: a release binary on rustls (no OpenSSL anywhere) in a distroless `cc` runtime
# that holds only the binary, glibc/libgcc, CA roots and the example config. No shell, no package
# manager, no curl: the HEALTHCHECK is the binary's own `llmgate health`. It runs as distroless's
# `nonroot` user (65532) and writes nothing, so `docker run --read-only` works.
#
# Base images are pinned by digest (the multi-arch index), with the tag they were resolved from
# in the reference itself (`image:tag@sha256:...`; the digest wins, the tag documents it). These
# were taken from public Dockerfiles pinning the same tags (the build machine has no registry
# access). To refresh one where a registry is reachable:
#   docker buildx imagetools inspect rust:1.95-slim-bookworm              # "Digest:" line
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot
# and change tag and digest together. Both are Debian 12 (bookworm): the binary's glibc matches.
# tests/e2e/test_container.py lints this file with hadolint and checks these promises.

# rust:1.95-slim-bookworm (has gcc for mimalloc's C code)
FROM rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
# Build settings (the allocator's arena commits on demand: lower idle RSS).
COPY .cargo ./.cargo
# Stub every target the manifest names ([[bin]], [[bench]], [[test]]): cargo refuses a manifest
# whose targets are missing. Only the stubs of src/ are replaced below; tests and benches are not
# part of the image (.dockerignore keeps tests/ out of the context).
RUN mkdir -p src benches tests/it \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && echo 'fn main() {}' > benches/stream_capacity.rs \
    && echo 'fn main() {}' > tests/it/main.rs \
    && cargo build --release --locked --bin llmgate \
    && rm -rf src
COPY src ./src
# COPY keeps the files' old mtimes: touch the crate roots so cargo rebuilds the crate itself.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin llmgate

# gcr.io/distroless/cc-debian12:nonroot (glibc, libgcc, CA roots, user nonroot = 65532)
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f AS runtime
# Root-owned and read-only to the user that runs them.
COPY --from=build --chmod=0555 /src/target/release/llmgate /usr/local/bin/llmgate
COPY --chmod=0444 config/llmgate.example.toml /etc/llmgate/llmgate.example.toml
# Not the user's home: the working directory is not writable either.
WORKDIR /
USER 65532:65532
ENV LLMGATE_LISTEN=0.0.0.0:8080 \
    LLMGATE_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/llmgate", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/llmgate"]
CMD ["serve"]
