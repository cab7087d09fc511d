// The session clock on this device: ClockService.Sync exchanges folded by the core's
// ClockFilter (Core/ClockFilter.cs: the Python SDK's filter). Eight exchanges 10 ms apart
// at start (holo/client/clock.py sync_many), then one every few seconds so drift and a
// replay's seeks are followed. Intents are stamped with NowNs(); a frame of video at
// session time t is shown with the state as of t (Core/SessionTimeline.cs).
//
// NOT COMPILED HERE: needs UnityEngine and Grpc.Core.Api.
using System;
using System.Diagnostics;
using System.Threading;
using System.Threading.Tasks;
using Grpc.Core;
using Holo.Bridge.Core;
using Holo.V1;
using UnityEngine;

namespace Holo.Bridge
{
    public sealed class HoloClock : MonoBehaviour
    {
        public HoloConnection connection;
        [Tooltip("Empty: the node's live session clock; a replay session's id: that replay's clock.")]
        public string sessionId = "";
        [Tooltip("Seconds between exchanges once synced.")]
        public float intervalSeconds = 5f;

        readonly ClockFilter filter = new ClockFilter(16, 3);
        CancellationTokenSource life;

        /// <summary>This device's monotonic clock in nanoseconds (Stopwatch: QueryPerformanceCounter
        /// or clock_gettime(MONOTONIC), never set back by NTP or the user).</summary>
        public static long LocalNs()
        {
            long ticks = Stopwatch.GetTimestamp(), frequency = Stopwatch.Frequency;
            return ticks / frequency * 1000000000L + ticks % frequency * 1000000000L / frequency;
        }

        public static double LocalSeconds() { return LocalNs() / 1e9; }

        public bool IsSynced { get { return filter.IsSynced; } }
        public ClockFilter Filter { get { return filter; } }

        /// <summary>The session clock now (ns); 0 before the first exchange (the server then
        /// stamps intents itself).</summary>
        public long NowNs() { return filter.IsSynced ? filter.ToSession(LocalNs()) : 0; }

        async void Start()
        {
            if (connection == null) connection = GetComponent<HoloConnection>();
            life = new CancellationTokenSource();
            CancellationToken ct = life.Token;
            try
            {
                for (int k = 0; k < 8; k++)
                {
                    await SyncOnce(ct);
                    await Task.Delay(10, ct);
                }
                while (!ct.IsCancellationRequested)
                {
                    await Task.Delay(TimeSpan.FromSeconds(intervalSeconds), ct);
                    try
                    {
                        await SyncOnce(ct);
                    }
                    catch (RpcException e)
                    {
                        if (!HoloConnection.Retryable(e, ct)) throw;
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
            catch (Exception e)
            {
                UnityEngine.Debug.LogError("holo clock: " + e.Message);
            }
        }

        /// <summary>One exchange of the four timestamps.</summary>
        public async Task<ClockSample> SyncOnce(CancellationToken ct)
        {
            long t1 = LocalNs();
            var request = new SyncRequest { ClientSendNs = t1, SessionId = new SessionId { Value = sessionId } };
            SyncReply reply = await connection.Invoker.AsyncUnaryCall(HoloRpc.Sync, null, connection.Options(ct, TimeSpan.FromSeconds(5)), request);
            long t4 = LocalNs();
            if (reply.ClientSendNs != t1)
            {
                throw new HoloBridgeException("the clock reply does not echo our t1; is a proxy caching calls?");
            }
            return filter.Add(t1, reply.ServerReceiveNs, reply.ServerSendNs, t4, reply.Rate, reply.Epoch);
        }

        void OnDestroy()
        {
            if (life != null) life.Cancel();
        }
    }
}
