// What the core raises, after holo/errors.py: a small hierarchy whose messages say what
// failed, on which input, and what to do; the fields a caller may act on are properties.
using System;

namespace Holo.Bridge.Core
{
    /// <summary>The base of every error the bridge raises.</summary>
    public class HoloBridgeException : Exception
    {
        public HoloBridgeException(string message) : base(message) { }
        public HoloBridgeException(string message, Exception inner) : base(message, inner) { }
    }

    /// <summary>An event that cannot be folded (its seq does not follow the state's, or its
    /// kind is unknown or malformed): the holo SessionError of a client.</summary>
    public class SessionException : HoloBridgeException
    {
        public SessionException(string message) : base(message) { }
    }

    /// <summary>Reconnecting was given up after <see cref="Failures"/> breaks in a row.</summary>
    public class SessionGaveUpException : HoloBridgeException
    {
        public int Failures { get; private set; }

        public SessionGaveUpException(string message, int failures) : base(message)
        {
            Failures = failures;
        }
    }

    /// <summary>What went wrong with a model's bytes. DataLoss: they are not what the
    /// manifest says (a chunk out of place, a checksum that does not match): fetch again.
    /// Changed: the model changed during the download. Protocol: the stream broke a rule
    /// (data before the manifest, bytes past the end).</summary>
    public enum ModelErrorKind
    {
        DataLoss,
        Changed,
        Protocol,
    }

    /// <summary>A model download that cannot go on; <see cref="ModelId"/> and, when a level
    /// of detail is at fault, <see cref="Level"/> (its index) name what.</summary>
    public class ModelDownloadException : HoloBridgeException
    {
        public string ModelId { get; private set; }
        public int Level { get; private set; }
        public ModelErrorKind Kind { get; private set; }

        public ModelDownloadException(string message, string modelId, ModelErrorKind kind, int level = -1)
            : base(message)
        {
            ModelId = modelId;
            Kind = kind;
            Level = level;
        }
    }

    /// <summary>The clock filter cannot answer: not synced yet, or the clock is paused.</summary>
    public class ClockException : HoloBridgeException
    {
        public ClockException(string message) : base(message) { }
    }
}
