// GlbLevels.cs: each level of the sample knee (tests/vectors/model_stream.json) cut from
// the prefix that holds it, as a GLB of its own. The C# checks here read the result back;
// when HOLO_UNITY_OUT names a folder the levels are also written there, and
// tests/test_unity_core.py runs the Khronos glTF validator and holo's manifest on them.
using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using NUnit.Framework;

namespace Holo.Bridge.Core.Tests
{
    [TestFixture]
    public class GlbLevelsTests
    {
        static Dictionary<string, object> JsonOf(byte[] glb)
        {
            Assert.AreEqual(0x46546C67u, BitConverter.ToUInt32(glb, 0), "magic");
            Assert.AreEqual((uint)glb.Length, BitConverter.ToUInt32(glb, 8), "the header's length is the file's");
            int length = (int)BitConverter.ToUInt32(glb, 12);
            Assert.AreEqual(0, length % 4, "chunks are 4-byte aligned");
            return (Dictionary<string, object>)Json.Parse(Encoding.UTF8.GetString(glb, 20, length));
        }

        static long Triangles(Dictionary<string, object> tree)
        {
            long triangles = 0;
            foreach (object m in J.Arr(tree, "meshes"))
            {
                foreach (object p in J.Arr(m, "primitives"))
                {
                    triangles += J.Long(J.Arr(tree, "accessors")[(int)J.Long(p, "indices")], "count") / 3;
                }
            }
            return triangles;
        }

        [Test]
        public void JsonWritesWhatItReads()
        {
            const string text = "{\"a\":[1,-2.5,1E-05,\"x\\\"y\\n\",true,false,null],\"b\":{\"c\":1780000000000000001}}";
            Assert.AreEqual(text, Json.Write(Json.Parse(text)));
        }

        [TestCase("1.522252428167575", 0x3ff85b255cb3c7fbL)] // mono's double.Parse: ...fc
        [TestCase("-0.1", unchecked((long)0xbfb999999999999aUL))]
        [TestCase("5e-324", 1L)]
        [TestCase("2.2250738585072009e-308", 0xfffffffffffffL)]
        [TestCase("1.7976931348623157e308", 0x7fefffffffffffffL)]
        // Exactly half way between two doubles: the even one, below and above.
        [TestCase("1.62290169488970204003663866387796588242053985595703125", 0x3ff9f767c482c9b0L)]
        [TestCase("1.74178698926072950126098248802009038627147674560546875", 0x3ffbde5c08b791f8L)]
        public void JsonReadsTheNearestDouble(string text, long bits)
        {
            Assert.AreEqual(bits, BitConverter.DoubleToInt64Bits((double)Json.Parse(text)), text);
        }

        [Test]
        public void SharedVectorsEachLevelOfTheKneeStandsAlone()
        {
            object vector = Vectors.Load("model_stream.json");
            byte[] glb = Convert.FromBase64String(J.Str(vector, "glb_base64"));
            List<object> lods = J.Arr(J.At(vector, "manifest"), "lods");
            Assert.AreEqual(lods.Count, GlbLevels.Count(glb, glb.Length));
            string output = Environment.GetEnvironmentVariable("HOLO_UNITY_OUT");
            for (int k = 0; k < lods.Count; k++)
            {
                int prefix = (int)J.Long(lods[k], "complete_at_bytes");
                var partial = new byte[glb.Length]; // what a download holds: zeros past the prefix
                Array.Copy(glb, partial, prefix);
                byte[] level = GlbLevels.Extract(partial, prefix, k);
                Dictionary<string, object> tree = JsonOf(level);
                Assert.AreEqual(1, J.Arr(tree, "scenes").Count, "level " + k);
                Assert.AreEqual(J.Str(lods[k], "name"), J.Str(J.Arr(tree, "scenes")[0], "name"));
                Assert.AreEqual(J.Long(lods[k], "triangles"), Triangles(tree), "triangles of level " + k);
                Assert.AreEqual(4, J.Arr(tree, "nodes").Count, "the level's root and its three bones");
                long bin = BitConverter.ToUInt32(level, 20 + (int)BitConverter.ToUInt32(level, 12));
                Assert.GreaterOrEqual(bin, J.Long(J.Arr(tree, "buffers")[0], "byteLength"));
                foreach (object view in J.Arr(tree, "bufferViews"))
                {
                    Assert.LessOrEqual(J.Long(view, "byteOffset") + J.Long(view, "byteLength"), J.Long(J.Arr(tree, "buffers")[0], "byteLength"));
                    Assert.AreEqual(0, J.Long(view, "byteOffset") % 4);
                }
                Assert.Less(level.Length, prefix, "smaller than the prefix it came from");
                if (!string.IsNullOrEmpty(output)) File.WriteAllBytes(Path.Combine(output, "knee_level" + k + ".glb"), level);
                if (k > 0)
                {
                    int early = (int)J.Long(lods[k - 1], "complete_at_bytes");
                    var error = Assert.Throws<FormatException>(() => GlbLevels.Extract(partial, early, k));
                    StringAssert.Contains("has not arrived whole", error.Message);
                }
            }
        }

        [Test]
        public void WhatIsNotAGlbOrNoSuchLevelIsRefused()
        {
            Assert.Throws<FormatException>(() => GlbLevels.Extract(new byte[64], 64, 0));
            byte[] glb = Convert.FromBase64String(J.Str(Vectors.Load("model_stream.json"), "glb_base64"));
            StringAssert.Contains("no level 7", Assert.Throws<FormatException>(() => GlbLevels.Extract(glb, glb.Length, 7)).Message);
        }
    }
}
