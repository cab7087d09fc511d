// The connection to a holo node: the channel, the token every call carries, and which
// failures are worth a retry. One per server; the other components find it on their
// GameObject or are given it.
//
// Transport. Unity's .NET (Mono and IL2CPP, up to 2022.3 at least) has no HTTP/2 in its
// HttpClient, and HoloLens 2 apps have only HTTP/1.1, so the default is gRPC-Web
// (Grpc.Net.Client.Web's GrpcWebHandler, HTTP/1.1) against the server's web port
// (`holo serve --web`), which serves every service over gRPC-Web beside the page
// (ARCHITECTURE.md, "Transports"). holo's RPCs are unary and server-streaming only, which
// gRPC-Web carries. "Http2" (native gRPC, the server's main port) is for a runtime whose
// HttpClient speaks HTTP/2.
//
// Security. TLS whenever the server is not on this machine: an https:// URL. The server's
// certificate is checked by the platform's trust store, or, when a CA certificate (PEM) is
// given, against that CA (a hospital's own; HoloLens' WinRT HTTP stack may not call the
// check: install the CA on the device there). Plain http:// is refused beyond loopback
// unless allowPlainText is set, and then said in the log: never silently. The token (from
// `holo token`) travels as `authorization: Bearer <token>` metadata on every call, as the
// Python SDK sends it (holo/client/channel.py call_metadata).
//
// NOT COMPILED HERE: needs UnityEngine, Grpc.Net.Client(.Web) and Grpc.Core.Api.
using System;
using System.Net.Http;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Threading;
using Grpc.Core;
using Grpc.Net.Client;
using Grpc.Net.Client.Web;
using UnityEngine;

namespace Holo.Bridge
{
    public enum HoloTransport
    {
        /// <summary>gRPC-Web over HTTP/1.1 to the web port (HoloLens 2, and any Unity runtime).</summary>
        GrpcWeb,
        /// <summary>Native gRPC over HTTP/2 to the main port (a runtime with HTTP/2).</summary>
        Http2,
    }

    public sealed class HoloConnection : MonoBehaviour
    {
        [Tooltip("The server: https://host:port/ of its web port for gRPC-Web (holo serve --web), or of its main port for HTTP/2.")]
        public string serverUrl = "http://127.0.0.1:8080/";
        public HoloTransport transport = HoloTransport.GrpcWeb;
        [Tooltip("The token from `holo token` (role and case). Prefer SetToken at run time to keeping it in a scene.")]
        public string token = "";
        [Tooltip("PEM of the CA that signed the server's certificate, when it is not in the platform's trust store.")]
        public TextAsset caCertificate;
        [Tooltip("Allow plain http:// to a server that is not on this machine (development only).")]
        public bool allowPlainText;

        // A frame of messages and the server's (up to 8 MiB, as the Python SDK's limit).
        const int MaxReceiveBytes = 8 << 20;

        GrpcChannel channel;
        X509Certificate2 ca;

        public void SetToken(string value)
        {
            token = value ?? "";
        }

        /// <summary>The channel's call invoker (opened on first use).</summary>
        public CallInvoker Invoker
        {
            get
            {
                if (channel == null) channel = Open();
                return channel.CreateCallInvoker();
            }
        }

        /// <summary>Options of one call: the token, a deadline for unary calls, cancellation.</summary>
        public CallOptions Options(CancellationToken cancellation, TimeSpan? timeout = null)
        {
            var headers = new Metadata();
            if (!string.IsNullOrEmpty(token)) headers.Add("authorization", "Bearer " + token);
            DateTime? deadline = timeout.HasValue ? DateTime.UtcNow + timeout.Value : (DateTime?)null;
            return new CallOptions(headers, deadline, cancellation);
        }

        /// <summary>Failures a retry may cure: the node is away (restarting, failing over) or
        /// slow, as the Python SDK's SESSION_RETRY (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED
        /// by a closed channel); and over gRPC-Web a dropped HTTP/1.1 response, which
        /// Grpc.Net.Client reports as INTERNAL "Error reading next message" or UNKNOWN.</summary>
        public static bool Retryable(RpcException error, CancellationToken ours)
        {
            switch (error.StatusCode)
            {
                case StatusCode.Unavailable:
                case StatusCode.DeadlineExceeded:
                case StatusCode.Unknown:
                    return true;
                case StatusCode.Cancelled:
                    return !ours.IsCancellationRequested;
                case StatusCode.Internal:
                    return error.Status.Detail != null && error.Status.Detail.StartsWith("Error reading", StringComparison.Ordinal);
                default:
                    return false;
            }
        }

        GrpcChannel Open()
        {
            var uri = new Uri(serverUrl);
            if (uri.Scheme == "http" && !uri.IsLoopback)
            {
                if (!allowPlainText)
                {
                    throw new InvalidOperationException(
                        "holo server " + serverUrl + " is not on this machine: use https:// (TLS), or set allowPlainText for development");
                }
                Debug.LogWarning("holo: plain text to " + serverUrl + ": tokens and patient models travel unencrypted");
            }
            var inner = new HttpClientHandler();
            if (caCertificate != null)
            {
                ca = new X509Certificate2(PemToDer(caCertificate.text));
                inner.ServerCertificateCustomValidationCallback = ChainsToOurCa;
            }
            HttpMessageHandler handler = inner;
            if (transport == HoloTransport.GrpcWeb)
            {
                handler = new GrpcWebHandler(GrpcWebMode.GrpcWeb, inner) { HttpVersion = new Version(1, 1) };
            }
            return GrpcChannel.ForAddress(uri, new GrpcChannelOptions
            {
                HttpHandler = handler,
                MaxReceiveMessageSize = MaxReceiveBytes,
                DisposeHttpClient = true,
            });
        }

        bool ChainsToOurCa(HttpRequestMessage request, X509Certificate2 certificate, X509Chain chain, SslPolicyErrors errors)
        {
            if ((errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != SslPolicyErrors.None) return false; // wrong name, none sent
            using (var ours = new X509Chain())
            {
                ours.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                ours.ChainPolicy.VerificationFlags = X509VerificationFlags.AllowUnknownCertificateAuthority;
                ours.ChainPolicy.ExtraStore.Add(ca);
                if (!ours.Build(certificate)) return false;
                X509Certificate2 root = ours.ChainElements[ours.ChainElements.Count - 1].Certificate;
                return root.Thumbprint == ca.Thumbprint;
            }
        }

        static byte[] PemToDer(string pem)
        {
            const string Begin = "-----BEGIN CERTIFICATE-----", End = "-----END CERTIFICATE-----";
            int start = pem.IndexOf(Begin, StringComparison.Ordinal);
            int end = pem.IndexOf(End, StringComparison.Ordinal);
            if (start < 0 || end < start) throw new FormatException("the CA certificate is not PEM (-----BEGIN CERTIFICATE-----)");
            return Convert.FromBase64String(pem.Substring(start + Begin.Length, end - start - Begin.Length));
        }

        void OnDestroy()
        {
            if (channel != null) channel.Dispose();
            channel = null;
        }
    }
}
