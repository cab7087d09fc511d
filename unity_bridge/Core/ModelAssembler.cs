// A model's bytes from GetModel's chunks: the manifest first, then (offset, bytes) parts
// in file order. The same decisions as the Python SDK's fetch_model (holo/client/
// assets.py) and the page's fetchModel (holo/web/src/model.js):
//
// * A chunk must start where the received bytes end: one at another offset is an error
//   (DATA_LOSS in Python), never a hole or an overlap silently kept.
// * Level k is reported as soon as the received prefix holds it (CompleteAtBytes); its
//   PrefixSha256, when the manifest has one, is checked first: what is shown is what the
//   server published. A bad prefix is an error naming the model and the level.
// * The whole file's SHA-256 is checked when its last byte arrives.
// * After a broken stream the download resumes at ResumeOffset (GetModel's offset): the
//   server sends the manifest again (it must be the same model) and the rest.
// * With a triangle budget the last level needed is the finest within it (the coarse one
//   always): once it is in, the download is complete and the stream can be left, so the
//   finer levels' bytes never travel. That needs the prefix checksums of every level up
//   to it; a model published before holo recorded them is fetched whole, checked whole.
//
// The buffer is the file's full length from the manifest on (zeros past what arrived), so
// nothing is copied as it grows; Prefix(k) gives level k's bytes for an importer.
using System;
using System.Collections.Generic;
using System.Security.Cryptography;
using System.Text;

namespace Holo.Bridge.Core
{
    public sealed class ModelAssembler
    {
        readonly string modelId;
        readonly long triangleBudget;
        byte[] buffer;
        long received;
        int levelsDone;
        int lastLevel = -1;
        bool wholeChecked;

        /// <param name="modelId">Named in every error.</param>
        /// <param name="triangleBudget">The most triangles this device draws for the whole
        /// scene; long.MaxValue (the default) fetches every level.</param>
        /// <summary>One model's share of a device's budget for the whole scene: an equal
        /// part for each of the session's models (as the web page shares it); an unlimited
        /// budget stays unlimited.</summary>
        public static long ShareOfScene(long sceneBudget, int models)
        {
            if (sceneBudget == long.MaxValue) return long.MaxValue;
            return sceneBudget / Math.Max(1, models);
        }

        public ModelAssembler(string modelId, long triangleBudget = long.MaxValue)
        {
            this.modelId = modelId ?? "";
            this.triangleBudget = triangleBudget;
        }

        public ModelManifest Manifest { get; private set; }
        /// <summary>Bytes received so far: the offset to resume from after a broken stream.</summary>
        public long ResumeOffset { get { return received; } }
        /// <summary>Levels reported so far (0 .. LevelsDone - 1).</summary>
        public int LevelsDone { get { return levelsDone; } }
        /// <summary>The last level this download needs (see the budget); -1 before the manifest.</summary>
        public int LastLevel { get { return lastLevel; } }
        /// <summary>True when the whole file arrived and matched the manifest's SHA-256.</summary>
        public bool WholeFileChecked { get { return wholeChecked; } }

        /// <summary>Every level needed is in and checked (and the whole file, when the last
        /// level is needed): the stream may be left.</summary>
        public bool IsComplete
        {
            get
            {
                if (Manifest == null) return false;
                return Manifest.Lods.Count == 0 ? wholeChecked : levelsDone > lastLevel;
            }
        }

        /// <summary>The manifest, first on every GetModel stream. The first fixes the size and
        /// the levels needed; a later one (a resumed stream) must describe the same file.</summary>
        public void OnManifest(ModelManifest manifest)
        {
            if (Manifest != null)
            {
                if (manifest.Sha256 != Manifest.Sha256)
                {
                    throw new ModelDownloadException(
                        "model " + modelId + " changed during the download; fetch it again", modelId, ModelErrorKind.Changed);
                }
                return;
            }
            if (manifest.SizeBytes < 0 || manifest.SizeBytes > int.MaxValue)
            {
                throw new ModelDownloadException(
                    "model " + modelId + " is " + manifest.SizeBytes + " bytes; this client holds at most " + int.MaxValue,
                    modelId, ModelErrorKind.Protocol);
            }
            Manifest = manifest;
            buffer = new byte[manifest.SizeBytes];
            int count = manifest.Lods.Count;
            lastLevel = count - 1;
            if (count > 0)
            {
                int within = manifest.LastLevelWithin(triangleBudget);
                bool checkable = true;
                for (int k = 0; k <= within; k++) checkable &= manifest.Lods[k].PrefixSha256 != "";
                if (checkable) lastLevel = within;
            }
        }

        /// <summary>A cached copy whose SHA-256 the server confirmed (GetModel's have_sha256):
        /// checked here too, then every level is reported at once.</summary>
        public IList<LevelOfDetail> OnCachedCopy(byte[] data)
        {
            RequireManifest();
            if (data.LongLength != Manifest.SizeBytes || Sha256Hex(data, data.Length) != Manifest.Sha256)
            {
                throw new ModelDownloadException(
                    "the cached copy of model " + modelId + " does not match its manifest; fetch it again", modelId, ModelErrorKind.DataLoss);
            }
            Array.Copy(data, buffer, data.Length);
            received = data.LongLength;
            hashedLength = -1;
            wholeChecked = true;
            return Complete();
        }

        /// <summary>One chunk of the stream. Returns the levels it completed (checked), in
        /// order; most chunks complete none.</summary>
        public IList<LevelOfDetail> OnChunk(long offset, byte[] data)
        {
            RequireManifest();
            if (offset != received)
            {
                throw new ModelDownloadException(
                    "model " + modelId + ": chunk at " + offset + ", expected " + received + "; fetch again from " + received,
                    modelId, ModelErrorKind.DataLoss);
            }
            if (received + data.LongLength > buffer.LongLength)
            {
                throw new ModelDownloadException(
                    "model " + modelId + ": a chunk of " + data.Length + " bytes at " + offset + " passes the end of the file ("
                    + buffer.Length + " bytes)", modelId, ModelErrorKind.Protocol);
            }
            Array.Copy(data, 0, buffer, received, data.Length);
            received += data.LongLength;
            return Complete();
        }

        IList<LevelOfDetail> Complete()
        {
            var done = new List<LevelOfDetail>();
            IList<LevelOfDetail> lods = Manifest.Lods;
            while (levelsDone < lods.Count && received >= lods[levelsDone].CompleteAtBytes)
            {
                LevelOfDetail lod = lods[levelsDone];
                if (lod.PrefixSha256 != "")
                {
                    if (!(wholeChecked && lod.CompleteAtBytes == buffer.LongLength) && HashPrefix(lod.CompleteAtBytes) != lod.PrefixSha256)
                    {
                        throw new ModelDownloadException(
                            "model " + modelId + ": level " + lod.Index + " (" + lod.Name + ") does not match its checksum "
                            + "(prefix_sha256 of its first " + lod.CompleteAtBytes + " bytes); fetch the model again",
                            modelId, ModelErrorKind.DataLoss, lod.Index);
                    }
                }
                else if (lod.CompleteAtBytes == buffer.LongLength)
                {
                    CheckWhole(); // a level that needs the whole file is shown only once it is checked
                }
                done.Add(lod);
                levelsDone += 1;
            }
            if (received == buffer.LongLength) CheckWhole();
            return done;
        }

        void CheckWhole()
        {
            if (wholeChecked) return;
            if (HashPrefix(buffer.LongLength) != Manifest.Sha256)
            {
                throw new ModelDownloadException(
                    "model " + modelId + ": the received bytes do not match the manifest's sha256; fetch it again",
                    modelId, ModelErrorKind.DataLoss);
            }
            wholeChecked = true;
        }

        // The last level's prefix is the whole file: hashed once for both checks.
        long hashedLength = -1;
        string hashedHex;

        string HashPrefix(long length)
        {
            if (length != hashedLength)
            {
                hashedHex = Sha256Hex(buffer, (int)length);
                hashedLength = length;
            }
            return hashedHex;
        }

        void RequireManifest()
        {
            if (Manifest == null)
            {
                throw new ModelDownloadException(
                    "model " + modelId + ": data before the manifest; GetModel sends the manifest first", modelId, ModelErrorKind.Protocol);
            }
        }

        /// <summary>Level k's bytes: the file prefix that holds it (a copy, for an importer
        /// that keeps what it is given). Only levels already reported.</summary>
        public byte[] Prefix(int level)
        {
            if (level < 0 || level >= levelsDone)
            {
                throw new ArgumentOutOfRangeException("level", "level " + level + " of model " + modelId + " has not arrived");
            }
            var prefix = new byte[Manifest.Lods[level].CompleteAtBytes];
            Array.Copy(buffer, prefix, prefix.Length);
            return prefix;
        }

        /// <summary>The whole file, once it arrived and was checked.</summary>
        public byte[] WholeFile()
        {
            if (!wholeChecked) throw new InvalidOperationException("model " + modelId + " has not arrived whole");
            return buffer;
        }

        /// <summary>Lower-case hex SHA-256 of data[0 .. count), as holo writes it.</summary>
        public static string Sha256Hex(byte[] data, int count)
        {
            using (SHA256 sha = SHA256.Create())
            {
                byte[] digest = sha.ComputeHash(data, 0, count);
                var hex = new StringBuilder(64);
                foreach (byte b in digest) hex.Append(b.ToString("x2"));
                return hex.ToString();
            }
        }
    }
}
