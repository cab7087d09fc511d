// The holo.v1 RPCs this package calls, as gRPC method descriptors written by hand.
//
// protoc's C# service stubs come from grpc_csharp_plugin (the Grpc.Tools NuGet package),
// which the project's generator (proto/generate.py, grpcio-tools) does not have, so the
// few methods used are described here: service and method names as in
// proto/holo/v1/*.proto, messages (de)serialised with the generated classes' parsers
// (Runtime/Generated). Calls go through a CallInvoker (Grpc.Net.Client's GrpcChannel),
// with HoloConnection's call options (the bearer token).
//
// NOT COMPILED HERE: needs Google.Protobuf and Grpc.Core.Api (see README.md).
using Google.Protobuf;
using Grpc.Core;
using Holo.V1;

namespace Holo.Bridge
{
    public static class HoloRpc
    {
        const string Sessions = "holo.v1.SessionService";
        const string Assets = "holo.v1.AssetService";
        const string Clocks = "holo.v1.ClockService";

        static Marshaller<T> For<T>(MessageParser<T> parser) where T : class, IMessage<T>
        {
            return Marshallers.Create(message => message.ToByteArray(), parser.ParseFrom);
        }

        static Method<TRequest, TResponse> Unary<TRequest, TResponse>(string service, string name, MessageParser<TRequest> request, MessageParser<TResponse> response)
            where TRequest : class, IMessage<TRequest> where TResponse : class, IMessage<TResponse>
        {
            return new Method<TRequest, TResponse>(MethodType.Unary, service, name, For(request), For(response));
        }

        // SessionService
        public static readonly Method<FindSessionRequest, SessionInfo> FindSession =
            Unary(Sessions, "FindSession", FindSessionRequest.Parser, SessionInfo.Parser);
        public static readonly Method<JoinRequest, SessionMessage> Join =
            new Method<JoinRequest, SessionMessage>(MethodType.ServerStreaming, Sessions, "Join", For(JoinRequest.Parser), For(SessionMessage.Parser));
        public static readonly Method<LoadModelRequest, IntentAck> LoadModel =
            Unary(Sessions, "LoadModel", LoadModelRequest.Parser, IntentAck.Parser);
        public static readonly Method<CommitAnchorRequest, IntentAck> CommitAnchor =
            Unary(Sessions, "CommitAnchor", CommitAnchorRequest.Parser, IntentAck.Parser);
        public static readonly Method<DragRequest, IntentAck> Drag =
            Unary(Sessions, "Drag", DragRequest.Parser, IntentAck.Parser);
        public static readonly Method<HeadPoseRequest, IntentAck> UpdateHeadPose =
            Unary(Sessions, "UpdateHeadPose", HeadPoseRequest.Parser, IntentAck.Parser);
        public static readonly Method<PointerRequest, IntentAck> UpdatePointer =
            Unary(Sessions, "UpdatePointer", PointerRequest.Parser, IntentAck.Parser);
        public static readonly Method<AddAnnotationRequest, IntentAck> AddAnnotation =
            Unary(Sessions, "AddAnnotation", AddAnnotationRequest.Parser, IntentAck.Parser);
        public static readonly Method<RemoveAnnotationRequest, IntentAck> RemoveAnnotation =
            Unary(Sessions, "RemoveAnnotation", RemoveAnnotationRequest.Parser, IntentAck.Parser);
        public static readonly Method<ControlRequest, IntentAck> RequestControl =
            Unary(Sessions, "RequestControl", ControlRequest.Parser, IntentAck.Parser);
        public static readonly Method<ControlRequest, IntentAck> GrantControl =
            Unary(Sessions, "GrantControl", ControlRequest.Parser, IntentAck.Parser);
        public static readonly Method<ControlRequest, IntentAck> RevokeControl =
            Unary(Sessions, "RevokeControl", ControlRequest.Parser, IntentAck.Parser);
        public static readonly Method<HeartbeatRequest, IntentAck> Heartbeat =
            Unary(Sessions, "Heartbeat", HeartbeatRequest.Parser, IntentAck.Parser);
        public static readonly Method<LeaveRequest, IntentAck> Leave =
            Unary(Sessions, "Leave", LeaveRequest.Parser, IntentAck.Parser);

        // AssetService
        public static readonly Method<ListModelsRequest, ListModelsResponse> ListModels =
            Unary(Assets, "ListModels", ListModelsRequest.Parser, ListModelsResponse.Parser);
        public static readonly Method<GetModelRequest, GetModelResponse> GetModel =
            new Method<GetModelRequest, GetModelResponse>(MethodType.ServerStreaming, Assets, "GetModel", For(GetModelRequest.Parser), For(GetModelResponse.Parser));

        // ClockService
        public static readonly Method<SyncRequest, SyncReply> Sync =
            Unary(Clocks, "Sync", SyncRequest.Parser, SyncReply.Parser);
    }
}
