// One participant in a shared session, on a headset: joins, folds the server's events with
// the core (Core/SessionLink.cs: the Python SDK's decisions on resume, repeats, gaps,
// resyncs, heartbeats and back-off), and sends intents. Everything that decides lives in
// the core and is tested there; this component moves bytes and calls back.
//
// Threads. Start() runs on Unity's main thread, and every await here resumes there
// (UnitySynchronizationContext): the fold and the StateChanged / EventApplied /
// EphemeralReceived callbacks happen on the main thread, where they may touch the scene.
//
// NOT COMPILED HERE: needs UnityEngine, Grpc.Core.Api and the generated messages.
using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using Grpc.Core;
using Holo.Bridge.Core;
using UnityEngine;
// UnityEngine has a Pose and a Ray too: these are the core's (glTF convention, doubles).
using Pose = Holo.Bridge.Core.Pose;
using Ray = Holo.Bridge.Core.Ray;
using V1 = Holo.V1;

namespace Holo.Bridge
{
    public sealed class HoloSession : MonoBehaviour
    {
        public HoloConnection connection;
        [Tooltip("Stamps intents with the session time (else the server stamps them when it accepts them).")]
        public HoloClock clock;
        [Tooltip("Empty: the open session of the token's case (FindSession), waiting for the presenter to open one.")]
        public string sessionId = "";
        public string displayName = "Headset";

        // What this build speaks (holo/wire/common.py PROTOCOL_MAJOR, PROTOCOL_MINOR, FEATURES).
        const uint ProtocolMajor = 1, ProtocolMinor = 0;
        static readonly string[] Features = { "annotations", "control", "presence", "resync" };

        readonly SessionLink link = new SessionLink();
        CancellationTokenSource life;

        /// <summary>The protocol state (participant id, folded state, counters).</summary>
        public SessionLink Link { get { return link; } }
        public SessionState State { get { return link.State; } }
        public string ParticipantId { get { return link.ParticipantId; } }
        public bool IsJoined { get { return link.IsAccepted; } }
        /// <summary>This participant's role ("" before joining).</summary>
        public string Role { get { return link.State.RoleOf(link.ParticipantId); } }
        public bool InControl { get { return link.IsAccepted && link.State.Controller == link.ParticipantId; } }
        /// <summary>One line for people: connecting, connected, reconnecting, why it stopped.</summary>
        public string Status { get; private set; }

        /// <summary>The state was replaced or an event folded (main thread).</summary>
        public event Action<SessionState> StateChanged;
        public event Action<SessionEvent> EventApplied;
        public event Action<EphemeralUpdate> EphemeralReceived;

        void Awake()
        {
            link.Reset += (state, t) => { if (StateChanged != null) StateChanged(state); };
            link.Applied += (e, state) =>
            {
                if (EventApplied != null) EventApplied(e);
                if (StateChanged != null) StateChanged(state);
            };
            link.EphemeralReceived += u => { if (EphemeralReceived != null) EphemeralReceived(u); };
        }

        async void Start()
        {
            if (connection == null) connection = GetComponent<HoloConnection>();
            if (clock == null) clock = GetComponent<HoloClock>();
            life = new CancellationTokenSource();
            try
            {
                await Run(life.Token);
            }
            catch (OperationCanceledException)
            {
            }
            catch (Exception e)
            {
                Status = e.Message;
                Debug.LogError("holo session: " + e.Message);
            }
        }

        void OnDestroy()
        {
            if (life != null) life.Cancel();
        }

        async Task Run(CancellationToken ct)
        {
            Status = "Connecting…";
            if (string.IsNullOrEmpty(sessionId)) sessionId = await Find(ct);
            Task beating = HeartbeatForever(ct);
            while (!ct.IsCancellationRequested)
            {
                JoinParameters join = link.JoinParameters();
                var request = new V1.JoinRequest
                {
                    SessionId = new V1.SessionId { Value = sessionId },
                    ParticipantId = new V1.ParticipantId { Value = join.ParticipantId },
                    DisplayName = displayName,
                    Capabilities = Capabilities(),
                    ResumeFromSeq = (ulong)join.ResumeFromSeq,
                };
                string reason;
                bool retryable = true;
                try
                {
                    using (AsyncServerStreamingCall<V1.SessionMessage> call = connection.Invoker.AsyncServerStreamingCall(HoloRpc.Join, null, connection.Options(ct), request))
                    {
                        bool gap = false;
                        while (!gap && await call.ResponseStream.MoveNext(ct)) gap = Handle(call.ResponseStream.Current) == EventOutcome.Gap;
                        reason = gap ? "an event did not follow seq " + link.State.Seq + ": joining again from it" : "the server ended the session stream";
                    }
                }
                catch (RpcException e)
                {
                    if (ct.IsCancellationRequested) return;
                    retryable = HoloConnection.Retryable(e, ct);
                    reason = e.StatusCode + ": " + e.Status.Detail;
                }
                Status = retryable ? "Connection lost; reconnecting…" : reason;
                double wait = link.StreamBroken(retryable, reason); // throws when it gives up
                await Task.Delay(TimeSpan.FromSeconds(wait), ct);
            }
            await beating;
        }

        async Task<string> Find(CancellationToken ct)
        {
            while (true)
            {
                try
                {
                    V1.SessionInfo info = await connection.Invoker.AsyncUnaryCall(HoloRpc.FindSession, null, connection.Options(ct, TimeSpan.FromSeconds(10)), new V1.FindSessionRequest());
                    return info.SessionId.Value;
                }
                catch (RpcException e)
                {
                    if (e.StatusCode == StatusCode.NotFound) Status = "Waiting for the presenter to open the session…";
                    else if (HoloConnection.Retryable(e, ct)) Status = "Cannot reach the server; trying again…";
                    else throw;
                }
                await Task.Delay(2000, ct);
            }
        }

        EventOutcome Handle(V1.SessionMessage message)
        {
            double now = HoloClock.LocalSeconds();
            switch (message.KindCase)
            {
                case V1.SessionMessage.KindOneofCase.Accepted:
                    V1.JoinAccepted accepted = message.Accepted;
                    SessionSnapshot snapshot = accepted.Snapshot == null ? null : WireConvert.Snapshot(accepted.Snapshot);
                    link.OnAccepted(accepted.ParticipantId.Value, accepted.HeartbeatIntervalMs, snapshot, now);
                    Status = "Connected";
                    return EventOutcome.Applied;
                case V1.SessionMessage.KindOneofCase.Event:
                    return link.OnEvent(WireConvert.Event(message.Event), now);
                case V1.SessionMessage.KindOneofCase.Events:
                    var events = new List<SessionEvent>();
                    foreach (V1.SessionEvent e in message.Events.Events) events.Add(WireConvert.Event(e));
                    return link.OnEvents(events, now);
                case V1.SessionMessage.KindOneofCase.Ephemeral:
                case V1.SessionMessage.KindOneofCase.Ephemerals:
                    var updates = new List<EphemeralUpdate>();
                    IEnumerable<V1.EphemeralUpdate> received = message.KindCase == V1.SessionMessage.KindOneofCase.Ephemeral
                        ? new[] { message.Ephemeral } : (IEnumerable<V1.EphemeralUpdate>)message.Ephemerals.Updates;
                    foreach (V1.EphemeralUpdate u in received)
                    {
                        EphemeralUpdate update = WireConvert.Update(u);
                        if (update != null) updates.Add(update);
                    }
                    link.OnEphemerals(updates, now);
                    return EventOutcome.Applied;
                case V1.SessionMessage.KindOneofCase.Resync:
                    link.OnResync(WireConvert.Snapshot(message.Resync.Snapshot), now);
                    return EventOutcome.Applied;
                default:
                    return EventOutcome.Applied; // a newer server's message: nothing to fold
            }
        }

        async Task HeartbeatForever(CancellationToken ct)
        {
            var random = new System.Random();
            while (!ct.IsCancellationRequested)
            {
                await Task.Delay(TimeSpan.FromSeconds(link.HeartbeatWaitS(random.NextDouble())), ct);
                if (!link.HeartbeatDue(HoloClock.LocalSeconds())) continue;
                try
                {
                    await connection.Invoker.AsyncUnaryCall(HoloRpc.Heartbeat, null, connection.Options(ct, TimeSpan.FromSeconds(10)),
                        new V1.HeartbeatRequest { SessionId = Session(), ParticipantId = Me() });
                }
                catch (RpcException)
                {
                    // the stream's reconnect reports the trouble
                }
            }
        }

        static V1.Capabilities Capabilities()
        {
            var capabilities = new V1.Capabilities
            {
                ProtocolMajor = ProtocolMajor,
                ProtocolMinor = ProtocolMinor,
                SoftwareName = "holo-unity",
                SoftwareVersion = "0.1.0",
            };
            capabilities.Features.AddRange(Features);
            return capabilities;
        }

        V1.SessionId Session() { return new V1.SessionId { Value = sessionId }; }
        V1.ParticipantId Me() { return new V1.ParticipantId { Value = link.ParticipantId }; }
        long Now() { return clock != null ? clock.NowNs() : 0; }
        static string IntentId() { return Guid.NewGuid().ToString("N"); }

        /// <summary>A unary intent, sent again (the same request, so the same intent id: the
        /// server applies it once) while the server is away, as the SDK retries
        /// (RetryPolicy.Session). Returns the ack's seq.</summary>
        async Task<long> Intent<TRequest>(Method<TRequest, V1.IntentAck> method, TRequest request)
            where TRequest : class
        {
            CancellationToken ct = life.Token;
            for (int failures = 1; ; failures++)
            {
                try
                {
                    V1.IntentAck ack = await connection.Invoker.AsyncUnaryCall(method, null, connection.Options(ct, TimeSpan.FromSeconds(10)), request);
                    return (long)ack.Seq;
                }
                catch (RpcException e)
                {
                    if (!HoloConnection.Retryable(e, ct) || !RetryPolicy.Session.Retryable(failures)) throw;
                    await Task.Delay(TimeSpan.FromSeconds(RetryPolicy.Session.DelayS(failures)), ct);
                }
            }
        }

        // Intents: every pose, point and ray in the glTF convention (Frames.ToGltf) ------------

        /// <summary>Ask for control (experts).</summary>
        public Task<long> RequestControl()
        {
            return Intent(HoloRpc.RequestControl, new V1.ControlRequest { SessionId = Session(), ParticipantId = Me(), IntentId = IntentId() });
        }

        /// <summary>Give control to a presenter or an expert (presenters).</summary>
        public Task<long> GrantControl(string participantId)
        {
            return Intent(HoloRpc.GrantControl, new V1.ControlRequest
            {
                SessionId = Session(), ParticipantId = Me(), IntentId = IntentId(), Target = new V1.ParticipantId { Value = participantId },
            });
        }

        /// <summary>Take control back from whoever holds it (presenters).</summary>
        public Task<long> RevokeControl(string participantId)
        {
            return Intent(HoloRpc.RevokeControl, new V1.ControlRequest
            {
                SessionId = Session(), ParticipantId = Me(), IntentId = IntentId(), Target = new V1.ParticipantId { Value = participantId },
            });
        }

        public Task<long> LoadModel(string modelId, Pose? anchorGltf)
        {
            var request = new V1.LoadModelRequest
            {
                SessionId = Session(), ParticipantId = Me(), IntentId = IntentId(), TNs = Now(), ModelId = new V1.ModelId { Value = modelId },
            };
            if (anchorGltf.HasValue) request.AnchorPose = WireConvert.Message(anchorGltf.Value);
            return Intent(HoloRpc.LoadModel, request);
        }

        /// <summary>Place a model (the participant in control): its anchor, model -> room.</summary>
        public Task<long> CommitAnchor(string modelId, Pose anchorGltf)
        {
            return Intent(HoloRpc.CommitAnchor, new V1.CommitAnchorRequest
            {
                SessionId = Session(), ParticipantId = Me(), IntentId = IntentId(), TNs = Now(),
                ModelId = new V1.ModelId { Value = modelId }, AnchorPose = WireConvert.Message(anchorGltf),
            });
        }

        /// <summary>A live drag (ephemeral: the newest wins; commit on release).</summary>
        public Task<long> Drag(string modelId, Pose anchorGltf)
        {
            return Intent(HoloRpc.Drag, new V1.DragRequest
            {
                SessionId = Session(), ParticipantId = Me(), TNs = Now(),
                ModelId = new V1.ModelId { Value = modelId }, AnchorPose = WireConvert.Message(anchorGltf),
            });
        }

        public Task<long> HeadPose(Pose headGltf)
        {
            return Intent(HoloRpc.UpdateHeadPose, new V1.HeadPoseRequest
            {
                SessionId = Session(), ParticipantId = Me(), TNs = Now(), HeadPose = WireConvert.Message(headGltf),
            });
        }

        public Task<long> Pointer(Ray rayGltf)
        {
            return Intent(HoloRpc.UpdatePointer, new V1.PointerRequest
            {
                SessionId = Session(), ParticipantId = Me(), TNs = Now(), Pointer = WireConvert.Message(rayGltf),
            });
        }

        /// <summary>A marker at a point of the model's frame (glTF convention, metres).</summary>
        public Task<long> AddMarker(string modelId, Vec3 pointGltf)
        {
            var annotation = new V1.Annotation
            {
                AnnotationId = "a-" + IntentId().Substring(0, 20), ModelId = new V1.ModelId { Value = modelId },
                Marker = new V1.Marker { Position = WireConvert.Message(pointGltf) },
            };
            return Intent(HoloRpc.AddAnnotation, new V1.AddAnnotationRequest
            {
                SessionId = Session(), ParticipantId = Me(), IntentId = IntentId(), TNs = Now(), Annotation = annotation,
            });
        }

        public Task<long> AddLabel(string modelId, Vec3 pointGltf, string text)
        {
            var annotation = new V1.Annotation
            {
                AnnotationId = "a-" + IntentId().Substring(0, 20), ModelId = new V1.ModelId { Value = modelId },
                Label = new V1.TextLabel { Position = WireConvert.Message(pointGltf), Text = text },
            };
            return Intent(HoloRpc.AddAnnotation, new V1.AddAnnotationRequest
            {
                SessionId = Session(), ParticipantId = Me(), IntentId = IntentId(), TNs = Now(), Annotation = annotation,
            });
        }

        public Task<long> RemoveAnnotation(string annotationId)
        {
            return Intent(HoloRpc.RemoveAnnotation, new V1.RemoveAnnotationRequest
            {
                SessionId = Session(), ParticipantId = Me(), IntentId = IntentId(), TNs = Now(), AnnotationId = annotationId,
            });
        }

        /// <summary>Leave the session (otherwise presence times the participant out).</summary>
        public async Task Leave()
        {
            try
            {
                await Intent(HoloRpc.Leave, new V1.LeaveRequest { SessionId = Session(), ParticipantId = Me(), IntentId = IntentId() });
            }
            finally
            {
                life.Cancel();
            }
        }
    }
}
