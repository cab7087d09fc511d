// ModelAssembler.cs: a model's bytes from GetModel's chunks, by its rules on a made-up
// file and on the sample knee as a real server streamed it (tests/vectors/model_stream.json).
using System;
using System.Collections.Generic;
using NUnit.Framework;

namespace Holo.Bridge.Core.Tests
{
    [TestFixture]
    public class ModelAssemblerTests
    {
        // A 1000-byte "file" with levels complete at 100, 400 and 1000 bytes.
        static readonly byte[] File = MakeFile();

        static byte[] MakeFile()
        {
            var data = new byte[1000];
            new Random(3).NextBytes(data);
            return data;
        }

        static ModelManifest Manifest(bool prefixChecks = true, long[] triangles = null)
        {
            long[] ends = { 100, 400, 1000 };
            triangles = triangles ?? new long[] { 10000, 30000, 100000 };
            var lods = new List<LevelOfDetail>();
            for (int k = 0; k < 3; k++)
            {
                string prefix = prefixChecks ? ModelAssembler.Sha256Hex(File, (int)ends[k]) : "";
                lods.Add(new LevelOfDetail(k, "lod" + k, triangles[k], 0, ends[k], prefix));
            }
            return new ModelManifest("m", File.Length, ModelAssembler.Sha256Hex(File, File.Length), lods);
        }

        static byte[] Slice(byte[] data, int start, int count)
        {
            var part = new byte[count];
            Array.Copy(data, start, part, 0, count);
            return part;
        }

        static List<int> Feed(ModelAssembler assembler, byte[] data, int from, int to, int chunk)
        {
            var levels = new List<int>();
            for (int at = from; at < to; at += chunk)
            {
                foreach (LevelOfDetail lod in assembler.OnChunk(at, Slice(data, at, Math.Min(chunk, to - at)))) levels.Add(lod.Index);
            }
            return levels;
        }

        [Test]
        public void TheScenesBudgetIsSharedByItsModels()
        {
            Assert.AreEqual(100000, ModelAssembler.ShareOfScene(100000, 1));
            Assert.AreEqual(50000, ModelAssembler.ShareOfScene(100000, 2));
            Assert.AreEqual(100000, ModelAssembler.ShareOfScene(100000, 0), "no model yet: the whole budget");
            Assert.AreEqual(long.MaxValue, ModelAssembler.ShareOfScene(long.MaxValue, 3));
        }

        [Test]
        public void EachLevelIsReportedOnceWhenItsPrefixIsInEvenInsideAChunk()
        {
            var assembler = new ModelAssembler("m");
            assembler.OnManifest(Manifest());
            Assert.AreEqual(0, assembler.OnChunk(0, Slice(File, 0, 99)).Count);
            IList<LevelOfDetail> done = assembler.OnChunk(99, Slice(File, 99, 350)); // ends at 449: levels 0 and 1
            CollectionAssert.AreEqual(new[] { 0, 1 }, new[] { done[0].Index, done[1].Index });
            Assert.IsFalse(assembler.IsComplete);
            CollectionAssert.AreEqual(new[] { 2 }, Feed(assembler, File, 449, 1000, 128));
            Assert.IsTrue(assembler.IsComplete);
            Assert.IsTrue(assembler.WholeFileChecked);
            CollectionAssert.AreEqual(Slice(File, 0, 400), assembler.Prefix(1));
            CollectionAssert.AreEqual(File, assembler.WholeFile());
        }

        [Test]
        public void AChunkAtTheWrongOffsetIsRefused()
        {
            var assembler = new ModelAssembler("m-knee");
            assembler.OnManifest(Manifest());
            assembler.OnChunk(0, Slice(File, 0, 50));
            var error = Assert.Throws<ModelDownloadException>(() => assembler.OnChunk(60, Slice(File, 60, 10)));
            Assert.AreEqual(ModelErrorKind.DataLoss, error.Kind);
            StringAssert.Contains("m-knee: chunk at 60, expected 50", error.Message);
            Assert.Throws<ModelDownloadException>(() => assembler.OnChunk(0, Slice(File, 0, 10)), "nor an overlap");
            Assert.AreEqual(50, assembler.ResumeOffset);
        }

        [Test]
        public void DataBeforeTheManifestOrPastTheEndIsRefused()
        {
            var assembler = new ModelAssembler("m");
            Assert.AreEqual(ModelErrorKind.Protocol, Assert.Throws<ModelDownloadException>(() => assembler.OnChunk(0, new byte[1])).Kind);
            assembler.OnManifest(Manifest());
            Feed(assembler, File, 0, 990, 990);
            var error = Assert.Throws<ModelDownloadException>(() => assembler.OnChunk(990, new byte[20]));
            Assert.AreEqual(ModelErrorKind.Protocol, error.Kind);
        }

        [Test]
        public void ABadPrefixNamesTheModelAndTheLevel()
        {
            var assembler = new ModelAssembler("m-knee");
            assembler.OnManifest(Manifest());
            byte[] bad = (byte[])File.Clone();
            bad[250] ^= 0x01;
            Feed(assembler, bad, 0, 100, 100);
            var error = Assert.Throws<ModelDownloadException>(() => Feed(assembler, bad, 100, 400, 100));
            Assert.AreEqual(1, error.Level);
            Assert.AreEqual("m-knee", error.ModelId);
            StringAssert.Contains("model m-knee: level 1 (lod1) does not match its checksum", error.Message);
        }

        [Test]
        public void WithoutPrefixChecksumsOnlyTheWholeFileIsChecked()
        {
            var assembler = new ModelAssembler("m", 10000);
            assembler.OnManifest(Manifest(prefixChecks: false));
            Assert.AreEqual(2, assembler.LastLevel, "an older record is fetched whole, whatever the budget");
            byte[] bad = (byte[])File.Clone();
            bad[50] ^= 0x01;
            CollectionAssert.AreEqual(new[] { 0, 1 }, Feed(assembler, bad, 0, 900, 300));
            var error = Assert.Throws<ModelDownloadException>(() => assembler.OnChunk(900, Slice(bad, 900, 100)));
            Assert.AreEqual(-1, error.Level);
            StringAssert.Contains("do not match the manifest's sha256", error.Message);
        }

        [Test]
        public void ABudgetStopsAtTheFinestLevelWithinItAndTheCoarseOneIsAlwaysShown()
        {
            var assembler = new ModelAssembler("m", 30000);
            assembler.OnManifest(Manifest());
            Assert.AreEqual(1, assembler.LastLevel);
            Feed(assembler, File, 0, 400, 200);
            Assert.IsTrue(assembler.IsComplete, "the stream may be left at 400 bytes");
            Assert.IsFalse(assembler.WholeFileChecked);
            Assert.AreEqual(0, Manifest().LastLevelWithin(5000), "under every level: the coarse one");
            Assert.AreEqual(0, Manifest(true, new long[] { 10000, 90000, 20000 }).LastLevelWithin(10000));
            Assert.AreEqual(2, Manifest(true, new long[] { 10000, 90000, 20000 }).LastLevelWithin(30000), "the finest within, not the first");
        }

        [Test]
        public void AResumedStreamGoesOnFromTheOffsetAndMustBeTheSameModel()
        {
            var assembler = new ModelAssembler("m");
            assembler.OnManifest(Manifest());
            Feed(assembler, File, 0, 300, 150);
            Assert.AreEqual(300, assembler.ResumeOffset);
            assembler.OnManifest(Manifest()); // the resumed stream's manifest
            CollectionAssert.AreEqual(new[] { 1, 2 }, Feed(assembler, File, 300, 1000, 150));
            var other = new ModelManifest("m", 1000, new string('0', 64), Manifest().Lods);
            Assert.AreEqual(ModelErrorKind.Changed, Assert.Throws<ModelDownloadException>(() => assembler.OnManifest(other)).Kind);
        }

        [Test]
        public void ACachedCopyIsCheckedThenEveryLevelIsReported()
        {
            var assembler = new ModelAssembler("m");
            assembler.OnManifest(Manifest());
            Assert.AreEqual(3, assembler.OnCachedCopy(File).Count);
            Assert.IsTrue(assembler.IsComplete);
            var stale = new ModelAssembler("m");
            stale.OnManifest(Manifest());
            byte[] bad = (byte[])File.Clone();
            bad[0] ^= 1;
            Assert.Throws<ModelDownloadException>(() => stale.OnCachedCopy(bad));
        }

        // The shared vectors: the sample knee --------------------------------------------------

        static object Vector() { return Vectors.Load("model_stream.json"); }

        static ModelManifest KneeManifest(object vector, bool prefixChecks = true)
        {
            object m = J.At(vector, "manifest");
            var lods = new List<LevelOfDetail>();
            foreach (object l in J.Arr(m, "lods"))
            {
                lods.Add(new LevelOfDetail((int)J.Long(l, "index"), J.Str(l, "name"), J.Long(l, "triangles"), J.Long(l, "bytes"),
                    J.Long(l, "complete_at_bytes"), prefixChecks ? J.Str(l, "prefix_sha256") : ""));
            }
            return new ModelManifest(J.Str(m, "model_id"), J.Long(m, "size_bytes"), J.Str(m, "sha256"), lods);
        }

        static byte[] Glb(object vector) { return Convert.FromBase64String(J.Str(vector, "glb_base64")); }

        // Feeds one recorded stream's chunks; returns, per chunk, the levels it completed.
        static List<List<int>> Play(ModelAssembler assembler, ModelManifest manifest, byte[] glb, object stream, int count = int.MaxValue)
        {
            var levels = new List<List<int>>();
            for (int k = 0; k < J.Long(stream, "manifests"); k++) assembler.OnManifest(manifest);
            foreach (object chunk in J.Arr(stream, "chunks"))
            {
                if (levels.Count == count) break;
                int offset = (int)J.Long(J.Arr(chunk)[0]), length = (int)J.Long(J.Arr(chunk)[1]);
                var done = new List<int>();
                foreach (LevelOfDetail lod in assembler.OnChunk(offset, Slice(glb, offset, length))) done.Add(lod.Index);
                levels.Add(done);
            }
            return levels;
        }

        [Test]
        public void SharedVectorsTheKneeAsStreamedLevelsWhereThePythonSdkReportedThem()
        {
            object vector = Vector();
            byte[] glb = Glb(vector);
            ModelManifest manifest = KneeManifest(vector);
            Assert.AreEqual(manifest.SizeBytes, glb.Length);
            var assembler = new ModelAssembler(manifest.ModelId);
            object whole = J.At(J.At(vector, "streams"), "whole");
            List<List<int>> levels = Play(assembler, manifest, glb, whole);
            Assert.IsTrue(assembler.IsComplete);
            Assert.IsTrue(assembler.WholeFileChecked);
            Assert.Greater(levels.Count, manifest.Lods.Count, "levels span several chunks");
            // The Python SDK's on_lod(k, prefix): level k when `prefix` bytes had arrived.
            var reported = new List<long[]>();
            long received = 0;
            List<object> chunks = J.Arr(whole, "chunks");
            for (int c = 0; c < chunks.Count; c++)
            {
                received += J.Long(J.Arr(chunks[c])[1]);
                foreach (int level in levels[c]) reported.Add(new[] { level, received });
            }
            List<object> python = J.Arr(vector, "python_levels");
            Assert.AreEqual(python.Count, reported.Count);
            for (int k = 0; k < python.Count; k++)
            {
                Assert.AreEqual(J.Long(J.Arr(python[k])[0]), reported[k][0], "level " + k);
                Assert.AreEqual(J.Long(J.Arr(python[k])[1]), reported[k][1], "bytes at level " + k);
                CollectionAssert.AreEqual(Slice(glb, 0, (int)reported[k][1]), assembler.Prefix(k));
            }
        }

        [Test]
        public void SharedVectorsTheKneeResumedAfterABrokenStream()
        {
            object vector = Vector();
            byte[] glb = Glb(vector);
            ModelManifest manifest = KneeManifest(vector);
            object streams = J.At(vector, "streams");
            object resumed = J.At(streams, "resumed");
            var assembler = new ModelAssembler(manifest.ModelId);
            var levels = new List<int>();
            foreach (List<int> done in Play(assembler, manifest, glb, J.At(streams, "whole"), (int)J.Long(resumed, "broken_after_chunks"))) levels.AddRange(done);
            Assert.AreEqual(J.Long(resumed, "offset"), assembler.ResumeOffset, "GetModel's offset for the resumed stream");
            foreach (List<int> done in Play(assembler, manifest, glb, resumed)) levels.AddRange(done);
            CollectionAssert.AreEqual(new[] { 0, 1, 2 }, levels, "each level once, in order");
            Assert.IsTrue(assembler.WholeFileChecked);
        }

        [Test]
        public void SharedVectorsTheKneeFromACachedCopy()
        {
            object vector = Vector();
            ModelManifest manifest = KneeManifest(vector);
            object cached = J.At(J.At(vector, "streams"), "cached");
            Assert.AreEqual(manifest.Sha256, J.Str(cached, "have_sha256"));
            var assembler = new ModelAssembler(manifest.ModelId);
            Assert.AreEqual(0, Play(assembler, manifest, Glb(vector), cached).Count, "the server sent the manifest only");
            Assert.AreEqual(3, assembler.OnCachedCopy(Glb(vector)).Count);
            Assert.IsTrue(assembler.IsComplete);
        }

        [Test]
        public void SharedVectorsTheKneeWithinEachBudget()
        {
            object vector = Vector();
            byte[] glb = Glb(vector);
            ModelManifest manifest = KneeManifest(vector);
            foreach (object budget in J.Arr(vector, "budgets"))
            {
                long triangles = J.Long(budget, "budget");
                var assembler = new ModelAssembler(manifest.ModelId, triangles);
                assembler.OnManifest(manifest);
                Assert.AreEqual(J.Long(budget, "last_level"), assembler.LastLevel, "budget " + triangles);
                foreach (object chunk in J.Arr(J.At(J.At(vector, "streams"), "whole"), "chunks"))
                {
                    int offset = (int)J.Long(J.Arr(chunk)[0]), length = (int)J.Long(J.Arr(chunk)[1]);
                    assembler.OnChunk(offset, Slice(glb, offset, length));
                    if (assembler.IsComplete) break;
                }
                Assert.IsTrue(assembler.IsComplete);
                Assert.AreEqual(J.Long(budget, "stop_at_bytes"), assembler.ResumeOffset, "left the stream at, budget " + triangles);
            }
        }

        [Test]
        public void SharedVectorsTheKneeCorrupted()
        {
            object vector = Vector();
            byte[] glb = Glb(vector);
            int cases = 0;
            foreach (object c in J.Arr(vector, "corrupted"))
            {
                bool checks = J.Bool(c, "prefix_checks");
                ModelManifest manifest = KneeManifest(vector, checks);
                byte[] bad = (byte[])glb.Clone();
                bad[J.Long(c, "flip_at")] ^= 0xFF;
                var assembler = new ModelAssembler(manifest.ModelId);
                var error = Assert.Throws<ModelDownloadException>(() => Play(assembler, manifest, bad, J.At(J.At(vector, "streams"), "whole")));
                Assert.AreEqual(ModelErrorKind.DataLoss, error.Kind);
                StringAssert.Contains("model " + manifest.ModelId, error.Message);
                if (checks)
                {
                    int level = (int)J.Long(c, "error_level");
                    Assert.AreEqual(level, error.Level, "byte " + J.Long(c, "flip_at"));
                    Assert.AreEqual(level, assembler.LevelsDone, "the levels before it were shown");
                }
                else
                {
                    Assert.AreEqual(-1, error.Level);
                    Assert.AreEqual(manifest.Lods.Count - 1, assembler.LevelsDone, "unchecked levels were shown; the whole file failed");
                }
                cases++;
            }
            Assert.GreaterOrEqual(cases, 4);
        }
    }
}
