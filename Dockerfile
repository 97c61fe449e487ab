# The muster-agent image: a release build on Debian 12, run as a non-root user on
# distroless (no shell, no package manager), as Pod Security "restricted" wants.
# Build: docker build -t muster/muster-agent:dev .   (e2e/kind/load-images.sh does this)
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p node-agent --bin muster-agent \
    && cp target/release/muster-agent /muster-agent

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /muster-agent /usr/local/bin/muster-agent
USER 65532:65532
EXPOSE 2552 8558
ENTRYPOINT ["/usr/local/bin/muster-agent"]
CMD ["run"]
