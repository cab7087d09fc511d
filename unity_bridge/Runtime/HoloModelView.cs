// One holo model in the scene: GetModel streamed into the core's ModelAssembler
// (Core/ModelAssembler.cs: offsets, level boundaries, prefix and file SHA-256, resume,
// the budget), each level cut out of the received prefix as a GLB of its own
// (Core/GlbLevels.cs) and loaded with glTFast from bytes; a finer level replaces the
// coarser one once it is instantiated, so something is always shown.
//
// Frames. glTFast converts the meshes from glTF to Unity (negating X); this GameObject is
// the model frame, placed in the room by HoloSceneSync with the anchor pose converted by
// the same rule (Core/Frames.cs). The patient -> glTF rule of ARCHITECTURE.md is inside
// the GLB (each level's root node), so nothing here converts patient coordinates.
//
// Budget: the most triangles this device draws for the whole scene (every structure).
// Standalone headsets (HoloLens 2, Quest, Magic Leap 2) render stereo at 60-90 Hz on a
// mobile GPU; Microsoft's HoloLens 2 guidance is under 100k triangles for a whole scene at
// 60 fps, so they get 100k and stop the download at the finest level within it (holo's
// levels are about 10k / 30k / 100k, then full detail); a PC (tethered VR, the Editor)
// draws the full model. The same classes as the web page (holo/web/src/immersive.js).
//
// NOT COMPILED HERE: needs UnityEngine, glTFast, Grpc.Core.Api and the generated messages.
using System;
using System.Threading;
using System.Threading.Tasks;
using GLTFast;
using Grpc.Core;
using Holo.Bridge.Core;
using UnityEngine;
using V1 = Holo.V1;

namespace Holo.Bridge
{
    public static class DeviceBudget
    {
        /// <summary>HoloLens 2 guidance: under 100k triangles for a whole scene at 60 fps.</summary>
        public const long Headset = 100000;
        public const long Unlimited = long.MaxValue;

        /// <summary>The budget of the device this runs on: a standalone headset (Android:
        /// Quest, Magic Leap 2; UWP on ARM: HoloLens 2) or anything else (PC, Editor).</summary>
        public static long ForThisDevice()
        {
            switch (Application.platform)
            {
                case RuntimePlatform.Android:
                case RuntimePlatform.WSAPlayerARM:
                    return Headset;
                default:
                    return Unlimited;
            }
        }
    }

    public sealed class HoloModelView : MonoBehaviour
    {
        public HoloConnection connection;
        public string modelId = "";
        [Tooltip("Triangles this device draws for the whole model; 0: by device class (DeviceBudget).")]
        public long triangleBudget;

        GltfImport shown;
        GameObject shownRoot;
        CancellationTokenSource life;

        public ModelManifest Manifest { get; private set; }
        /// <summary>The level on screen (-1 before the first).</summary>
        public int ShownLevel { get; private set; }
        public string Status { get; private set; }
        /// <summary>A level was put on screen: its index.</summary>
        public event Action<int> LevelShown;

        void Awake() { ShownLevel = -1; }

        async void Start()
        {
            if (connection == null) connection = GetComponentInParent<HoloConnection>();
            life = new CancellationTokenSource();
            try
            {
                await Download(life.Token);
            }
            catch (OperationCanceledException)
            {
            }
            catch (Exception e)
            {
                Status = e.Message;
                Debug.LogError("holo model " + modelId + ": " + e.Message);
            }
        }

        void OnDestroy()
        {
            if (life != null) life.Cancel();
            if (shown != null) shown.Dispose();
        }

        async Task Download(CancellationToken ct)
        {
            long budget = triangleBudget > 0 ? triangleBudget : DeviceBudget.ForThisDevice();
            var assembler = new ModelAssembler(modelId, budget);
            int failures = 0;
            DateTime firstFailure = DateTime.UtcNow;
            while (!assembler.IsComplete)
            {
                // The budget goes to the server too: it ends the stream after the last level
                // within it, so the finer levels do not travel even on a fast link.
                var request = new V1.GetModelRequest
                {
                    ModelId = new V1.ModelId { Value = modelId },
                    Offset = (ulong)assembler.ResumeOffset,
                    MaxTriangles = budget > 0 && budget < long.MaxValue ? (ulong)budget : 0UL,
                };
                try
                {
                    using (AsyncServerStreamingCall<V1.GetModelResponse> call = connection.Invoker.AsyncServerStreamingCall(HoloRpc.GetModel, null, connection.Options(ct), request))
                    {
                        // Leaving the using block cancels the call: a budget reached stops the stream.
                        while (!assembler.IsComplete && await call.ResponseStream.MoveNext(ct))
                        {
                            V1.GetModelResponse reply = call.ResponseStream.Current;
                            if (reply.PartCase == V1.GetModelResponse.PartOneofCase.Manifest)
                            {
                                assembler.OnManifest(WireConvert.Manifest(reply.Manifest));
                                Manifest = assembler.Manifest;
                                continue;
                            }
                            failures = 0; // bytes arrived: progress (a manifest alone is not)
                            var levels = assembler.OnChunk((long)reply.Data.Offset, reply.Data.Data.ToByteArray());
                            // Two levels complete in one chunk: only the finer is worth showing.
                            if (levels.Count > 0) await Show(assembler, levels[levels.Count - 1], ct);
                        }
                    }
                    if (!assembler.IsComplete)
                    {
                        throw new ModelDownloadException("model " + modelId + ": the server ended the stream at byte " + assembler.ResumeOffset + " of "
                            + (assembler.Manifest == null ? "?" : assembler.Manifest.SizeBytes.ToString()), modelId, ModelErrorKind.Protocol);
                    }
                }
                catch (RpcException e)
                {
                    if (!HoloConnection.Retryable(e, ct)) throw new HoloBridgeException("model " + modelId + ": " + e.StatusCode + ": " + e.Status.Detail, e);
                    failures += 1;
                    if (failures == 1) firstFailure = DateTime.UtcNow;
                    if (!RetryPolicy.Transfer.Retryable(failures, (DateTime.UtcNow - firstFailure).TotalSeconds)) throw;
                    Status = "Connection lost; resuming at byte " + assembler.ResumeOffset;
                    await Task.Delay(TimeSpan.FromSeconds(RetryPolicy.Transfer.DelayS(failures)), ct);
                }
            }
            Status = "Model ready";
        }

        async Task Show(ModelAssembler assembler, LevelOfDetail level, CancellationToken ct)
        {
            byte[] prefix = assembler.Prefix(level.Index);
            byte[] glb = GlbLevels.Extract(prefix, prefix.Length, level.Index);
            var import = new GltfImport();
            if (!await import.Load(glb, null, null, ct))
            {
                import.Dispose();
                throw new HoloBridgeException("model " + modelId + ": glTFast could not load level " + level.Name + " (is the Draco package installed?)");
            }
            var root = new GameObject(level.Name);
            root.transform.SetParent(transform, false);
            if (!await import.InstantiateMainSceneAsync(root.transform, ct))
            {
                Destroy(root);
                import.Dispose();
                throw new HoloBridgeException("model " + modelId + ": glTFast could not instantiate level " + level.Name);
            }
            // The finer level is in the scene: the coarser one goes.
            if (shownRoot != null) Destroy(shownRoot);
            if (shown != null) shown.Dispose();
            shown = import;
            shownRoot = root;
            ShownLevel = level.Index;
            Status = "Showing " + level.Name + " (" + level.Triangles + " triangles)";
            if (LevelShown != null) LevelShown(level.Index);
        }
    }
}
