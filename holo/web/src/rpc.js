// The services over gRPC-Web, from the page's own origin (the web port serves both).
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AssetService, ConversionService, UploadService } from "./gen/holo/v1/asset_pb.js";
import { ClockService } from "./gen/holo/v1/clock_pb.js";
import { SessionService } from "./gen/holo/v1/session_pb.js";
import { VideoService } from "./gen/holo/v1/video_pb.js";

export { Code, ConnectError };

/** One client per service, every call carrying the token. */
export function connect(token, baseUrl = window.location.origin) {
  const transport = createGrpcWebTransport({
    baseUrl,
    useBinaryFormat: true,
    interceptors: [
      (next) => async (request) => {
        request.header.set("authorization", `Bearer ${token}`);
        return next(request);
      },
    ],
  });
  return {
    sessions: createClient(SessionService, transport),
    assets: createClient(AssetService, transport),
    uploads: createClient(UploadService, transport),
    conversions: createClient(ConversionService, transport),
    clock: createClient(ClockService, transport),
    video: createClient(VideoService, transport),
  };
}

/** Codes worth retrying: the server is away (restarting, failing over) or slow. */
export function retryable(err) {
  const code = ConnectError.from(err).code;
  return code === Code.Unavailable || code === Code.DeadlineExceeded || code === Code.Unknown || code === Code.Canceled;
}

/** The server's one-line message for an error, for people (no stack, no code number). */
export function say(err) {
  const e = ConnectError.from(err);
  return e.rawMessage || e.message;
}

/** Wait before retry number `failures`: 0.2, 0.4, 0.8, 1.6 s, then 2 s at most. */
export function backoffMs(failures) {
  return Math.min(2000, 100 * 2 ** failures);
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
