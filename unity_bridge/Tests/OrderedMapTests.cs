// OrderedMap.cs: Python dict order, which the fold depends on.
using NUnit.Framework;

namespace Holo.Bridge.Core.Tests
{
    [TestFixture]
    public class OrderedMapTests
    {
        [Test]
        public void SettingAKeyAgainKeepsItsPlaceAndRemovingItThenAddingPutsItLast()
        {
            var map = new OrderedMap<int>();
            foreach (string key in new[] { "c", "a", "b" }) map.Set(key, 1);
            map.Set("a", 2);
            CollectionAssert.AreEqual(new[] { "c", "a", "b" }, map.Keys);
            Assert.AreEqual(2, map.Get("a"));
            Assert.IsTrue(map.Remove("c"));
            Assert.IsFalse(map.Remove("c"));
            map.Set("d", 4);
            map.Set("c", 3);
            CollectionAssert.AreEqual(new[] { "a", "b", "d", "c" }, map.Keys);
            CollectionAssert.AreEqual(new[] { 2, 1, 4, 3 }, map.Values);
        }

        [Test]
        public void ACopyIsIndependent()
        {
            var map = new OrderedMap<string>();
            map.Set("x", "1");
            OrderedMap<string> copy = map.Copy();
            map.Set("y", "2");
            map.Remove("x");
            CollectionAssert.AreEqual(new[] { "x" }, copy.Keys);
            Assert.IsNull(copy.Get("y"));
        }
    }
}
