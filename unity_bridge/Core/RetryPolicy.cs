// How often and how soon the bridge tries again (holo/client/retry.py RetryPolicy, the
// Python SDK's one policy): exponential back-off from 50 ms, doubling, capped. A headset on
// hospital Wi-Fi that drops for a second resumes within ~100 ms of the link coming back,
// and a node that is down is not hammered. Which gRPC status codes are worth a retry is
// the transport's to say (Runtime/HoloChannel.cs): the core is told "retryable" or not.
using System;

namespace Holo.Bridge.Core
{
    public sealed class RetryPolicy
    {
        /// <summary>Failures in a row retried before giving up (unless within the window).</summary>
        public int Attempts { get; private set; }
        public double FirstDelayS { get; private set; }
        public double MaxDelayS { get; private set; }
        /// <summary>Failures keep being retried while the first of them is less than this
        /// long ago, however many (a server restart takes seconds).</summary>
        public double WindowS { get; private set; }

        public RetryPolicy(int attempts = 5, double firstDelayS = 0.05, double maxDelayS = 2.0, double windowS = 0.0)
        {
            Attempts = attempts;
            FirstDelayS = firstDelayS;
            MaxDelayS = maxDelayS;
            WindowS = windowS;
        }

        /// <summary>A participant's stream and intents (holo/client/session.py
        /// SESSION_RETRY): 20 attempts up to 1 s apart, so a headset that loses its node
        /// fails over to another within a second of it answering.</summary>
        public static readonly RetryPolicy Session = new RetryPolicy(20, 0.05, 1.0);

        /// <summary>Downloads (holo/client/retry.py TRANSFER_RETRY): 60 s of failures, across
        /// a server restart (2.8 s measured; 60 s is twenty times that).</summary>
        public static readonly RetryPolicy Transfer = new RetryPolicy(5, 0.05, 2.0, 60.0);

        /// <summary>The wait (seconds) before retrying after the <paramref name="failures"/>-th
        /// failure in a row: min(first * 2^failures, max).</summary>
        public double DelayS(int failures)
        {
            return Math.Min(FirstDelayS * Math.Pow(2, failures), MaxDelayS);
        }

        /// <summary>Whether the <paramref name="failures"/>-th retryable failure in a row is
        /// retried, the first of them <paramref name="elapsedS"/> seconds ago.</summary>
        public bool Retryable(int failures, double elapsedS = 0.0)
        {
            return failures <= Attempts || elapsedS < WindowS;
        }
    }
}
